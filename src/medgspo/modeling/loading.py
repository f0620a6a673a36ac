"""The one way medgspo loads a base model (+ LoRA adapter), used by SFT, GSPO, eval, chat, serve, export and plan.

**Which class.** The hub checkpoint ``Qwen/Qwen3.5-4B`` is the vision-language class
``Qwen3_5ForConditionalGeneration`` (``text_config`` + ``vision_config``; weights under ``model.language_model.*``,
``model.visual.*`` and ``mtp.*``). medgspo trains and runs it as the **text class** ``Qwen3_5ForCausalLM``:
:func:`load_base_model` calls ``AutoModelForCausalLM.from_pretrained``, which reads the language weights of either
layout and gives the same logits as the vision-language class on text. No vision-tower memory is spent. What is
lost: image and video input, and the multi-token-prediction weights (``mtp.*``, used by vLLM/SGLang for speculative
decoding; transformers never loads them). Both back-ends converge on it: TRL given a path would load the
vision-language class, so SFT loads the model here and hands TRL the object; only ``--backend unsloth`` keeps the
model card's ``FastVisionModel`` (vision-language class), and its adapters load here all the same
(:mod:`medgspo.modeling.adapters` converts the layout).

``export`` is the one exception, on purpose: it merges into the checkpoint's *own* class
(``text_only=False``), so the merged folder replaces the base wherever the base ran (``vllm serve DIR``, image input
kept). Local folders are passed to transformers as absolute paths, so an adapter records a base
(``base_model_name_or_path``) that ``medgspo export`` finds from any working directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat
from medgspo.errors import AdapterMismatchError, ModelLoadError
from medgspo.modeling.adapters import load_adapter
from medgspo.modeling.tiny_model import resolve_model_path
from medgspo.utils.paths import RESOURCES, looks_like_path

logger = logging.getLogger(__name__)

__all__ = [
    "AdapterMismatchError",
    "QWEN3_5_4B_TEXT_CONFIG",
    "adapter_base_model",
    "check_model_arguments",
    "load_adapter",
    "load_base_model",
    "load_for_inference",
    "load_model_config",
]

TEXT_CLASS = "Qwen3_5ForCausalLM"
# Qwen/Qwen3.5-4B's text config (the figures + public copies, read 2026-11-29; docs/scaling.md), so `plan`
# can build the real model on the meta device without the network.
QWEN3_5_4B_TEXT_CONFIG = RESOURCES / "qwen3_5_4b_text_config.json"
BUNDLED_CONFIGS = {"Qwen/Qwen3.5-4B": QWEN3_5_4B_TEXT_CONFIG}


def local_path(name_or_path: str | None) -> str:
    """``tiny`` resolved, an existing local folder made absolute, a Hub id as is."""
    path = resolve_model_path(name_or_path)
    return str(Path(path).expanduser().resolve()) if Path(path).expanduser().is_dir() else path


def is_vision_language(config: Any) -> bool:
    """Whether a config describes the vision-language checkpoint (a ``vision_config`` beside a ``text_config``)."""
    return getattr(config, "vision_config", None) is not None


def _dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, str) and dtype != "auto":
        return getattr(torch, dtype)
    return dtype


def load_base_model(
    name_or_path: str | None,
    *,
    dtype: Any = "auto",
    revision: str | None = None,
    attn_implementation: str | None = None,
    text_only: bool = True,
):
    """The base model: the text class (``text_only``, every stage) or the checkpoint's own class (export)."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    path = local_path(name_or_path)
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
        own = (config.architectures or [TEXT_CLASS])[0]
        cls = AutoModelForCausalLM if text_only else getattr(transformers, own, AutoModelForCausalLM)
        model = cls.from_pretrained(path, **kwargs)
    except OSError as exc:
        text = str(exc).strip().splitlines()
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {text[0] if text else type(exc).__name__}") from exc
    if is_vision_language(config) and text_only:
        logger.info(
            "Model %s: the checkpoint is %s; loaded as %s (text only: no vision tower, no MTP weights)",
            name_or_path,
            own,
            type(model).__name__,
        )
    return model


def checkpoint_module_names(name_or_path: str | None) -> tuple[set[str], str]:
    """The module names of the checkpoint's own class (built on the meta device, no weights read) and its name."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = AutoConfig.from_pretrained(local_path(name_or_path))
    cls = getattr(transformers, (config.architectures or [TEXT_CLASS])[0], None)
    with torch.device("meta"), no_init_weights():
        model = cls._from_config(config) if cls is not None else AutoModelForCausalLM.from_config(config)
    return {n for n, _ in model.named_modules()}, type(model).__name__


def load_model_config(name_or_path: str | None) -> tuple[Any, str]:
    """``(config, where it came from)`` without weights and without waiting on the network when it can: a local
    folder or the Hugging Face cache first, then a config bundled with medgspo (``Qwen/Qwen3.5-4B``), then the Hub
    unless offline. Raises ``OSError`` when none is found."""
    from huggingface_hub import constants
    from transformers import AutoConfig

    path = local_path(name_or_path)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True), "its config.json"
    except OSError:
        bundled = BUNDLED_CONFIGS.get(str(name_or_path))
        if bundled is not None:
            config = AutoConfig.for_model(**json.loads(bundled.read_text(encoding="utf-8")))
            return config, f"the copy bundled with medgspo ({bundled.name})"
        if constants.HF_HUB_OFFLINE or looks_like_path(path):
            raise
    return AutoConfig.from_pretrained(path), "its config.json (Hub)"


def load_for_inference(model: str | None, adapter: str | Path | None = None, device: str | None = None):
    """Return ``(model, tokenizer, chat_format)`` ready for generation (eval mode, left padding)."""
    import torch
    from transformers import AutoTokenizer

    base = local_path(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    tokenizer.padding_side = "left"
    lm = load_base_model(model, dtype=dtype)
    if adapter:
        lm = load_adapter(lm, adapter)
    fmt_dir = adapter if adapter else base
    chat_format = ChatFormat.load(fmt_dir) if Path(str(fmt_dir)).is_dir() else ChatFormat()
    return lm.to(device).eval(), tokenizer, chat_format


def check_model_arguments(model: str | None, adapter: str | Path | None) -> None:
    """Fail early, with a one-line message, on a missing local model folder or a folder that is not an adapter."""
    if model and looks_like_path(model) and not Path(model).expanduser().exists():
        raise ModelLoadError(f"model folder not found: {model}")
    if adapter is not None:
        adapter_dir = Path(adapter)
        if not adapter_dir.is_dir():
            raise ModelLoadError(f"adapter folder not found: {adapter}")
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelLoadError(f"not a LoRA adapter folder (no adapter_config.json): {adapter}")


def adapter_base_model(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on, as recorded in its ``adapter_config.json``."""
    path = Path(adapter) / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path") or None
    except (OSError, ValueError):
        return None
