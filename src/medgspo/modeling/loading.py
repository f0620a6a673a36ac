"""Load a base model (+ optional LoRA adapter) with its chat format; check model and adapter paths first.

Shared by training, evaluation, chat, serving and export. The chat format is read from the adapter folder
(or the model folder) so inference lays out prompts exactly as training did.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat
from medgspo.data.tiny_model import resolve_model_path
from medgspo.errors import AdapterMismatchError, ModelLoadError
from medgspo.utils.paths import looks_like_path

logger = logging.getLogger(__name__)


def load_adapter(model: Any, adapter: str | Path, *, is_trainable: bool = False):
    """``PeftModel.from_pretrained`` that refuses an adapter made for another model class.

    PEFT only warns when adapter weights find no module (for example an adapter trained on Qwen3.5's
    vision-language class, whose layers sit under ``model.language_model``, loaded into the text-only class), and
    the adapter then silently does nothing. Here that is an error naming the adapter and a few of the keys.
    """
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    for w in caught:
        message = str(w.message)
        if "missing adapter keys" in message:
            raise AdapterMismatchError(
                f"adapter {str(adapter)!r} does not fit {type(model).__name__}: its LoRA weights name modules this "
                f"model does not have, so it would load as a no-op ({message[:300]}). Load it on the model class it "
                "was trained on (see docs/scaling.md, Unsloth)."
            )
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return peft_model


def load_for_inference(model: str | None, adapter: str | Path | None = None, device: str | None = None):
    """Return ``(model, tokenizer, chat_format)`` ready for generation (eval mode, left padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = resolve_model_path(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    tokenizer.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
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
