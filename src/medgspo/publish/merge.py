"""Merge a LoRA adapter into its base model and save one standalone model folder (``medgspo export``), or write the
adapter in the layout ``vllm serve --enable-lora`` needs for that base (``--merge false``).

    medgspo export --adapter runs/sft --output runs/merged                  # the base is the one the adapter records
    medgspo export --adapter runs/gspo --output runs/gspo-vllm-lora --merge false
    medgspo export --model Qwen/Qwen3.5-4B --adapter runs/gspo --output runs/merged --dtype bfloat16

**Merged** (default): the base is loaded in the checkpoint's *own* class (``Qwen3_5ForConditionalGeneration`` for
the hub checkpoint, so the vision tower is kept and the folder replaces the base anywhere: ``vllm serve DIR``,
``AutoModelForCausalLM.from_pretrained``, ``medgspo chat --model DIR``, llama.cpp's ``convert_hf_to_gguf.py``), the
adapter is loaded on it whatever layout it was saved in (:mod:`medgspo.modeling.adapters`), merged in float32 on
the CPU and cast to ``--dtype`` (default: the base's dtype). The weights outside the language model -- the hub
checkpoint's multi-token-prediction ``mtp.*`` (transformers does not load them; vLLM's speculative decoding does) and
the vision tower -- are copied from the base unchanged, byte for byte, with the base's generation, processor and
chat-template files (:mod:`medgspo.publish.base_weights`). The folder holds the weights, configs, the tokenizer with
its chat template, ``chat_format.json`` and ``medgspo_export.json`` (where it came from, what was merged, what was
copied).

**Adapter** (``--merge false``): the adapter's weights renamed for the base checkpoint's own class, e.g.
``base_model.model.model.language_model.layers...`` for ``Qwen3_5ForConditionalGeneration``. vLLM maps exactly
these names for that architecture; an adapter named for the text class (``model.layers...``) loads there without
error and changes nothing (vLLM issue #49354, read 2026-11-29). Serve it with
``vllm serve Qwen/Qwen3.5-4B --enable-lora --lora-modules med=DIR --max-lora-rank 16``.
The flags live in :mod:`medgspo.serve.cli`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medgspo.data.chat_format import ChatFormat
from medgspo.errors import ConfigError, ModelLoadError
from medgspo.modeling.adapters import convert_adapter
from medgspo.modeling.loading import (
    adapter_base_model,
    check_model_arguments,
    checkpoint_module_names,
    load_adapter,
    load_base_model,
    local_path,
)
from medgspo.publish.base_weights import base_files_dir, copy_base_files, group_counts, keep_base_weights
from medgspo.serve.engine import first_line
from medgspo.utils.io import write_json

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
INFO_FILE = "medgspo_export.json"


def merge_adapter(
    model: str | None,
    adapter: str | Path,
    output: str | Path,
    *,
    dtype: str = "auto",
    overwrite: bool = False,
    merge: bool = True,
) -> Path:
    """Merge ``adapter`` into ``model`` (default: the base the adapter records) and save it all to ``output``; with
    ``merge=False`` write the adapter renamed for the base checkpoint's own class instead."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    adapter, output = Path(adapter), Path(output)
    base = _check(model, adapter, output, overwrite=overwrite)
    base_path = local_path(base)
    if not merge:
        return _export_adapter(base, base_path, adapter, output)
    logger.info("Merging %s into %s", adapter, base)
    try:
        lm = load_base_model(base_path, dtype=torch.float32, text_only=False)
        peft_model = load_adapter(lm, adapter)
    except (OSError, ValueError, RuntimeError) as exc:  # missing files, or an adapter made for another model
        raise ModelLoadError(f"cannot load {base!r} + adapter {str(adapter)!r}: {first_line(exc)}") from exc
    target_dtype = _target_dtype(dtype, AutoConfig.from_pretrained(base_path))  # the checkpoint's, not float32
    adapted = adapted_modules(peft_model)
    merged = peft_model.merge_and_unload().to(target_dtype)
    merged.config.dtype = target_dtype
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output)
    tokenizer_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_path
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(output)
    ChatFormat.load(adapter).save(output)
    base_dir = base_files_dir(base, base_path)
    copied = keep_base_weights(base_dir, output, language_prefixes(merged), adapted)
    info = {
        "base_model": base,
        "adapter": str(adapter),
        "dtype": str(target_dtype).removeprefix("torch."),
        "merged": {"into": language_prefixes(merged), "adapted_modules": _module_kinds(adapted)},
        "copied": {"tensors": group_counts(copied), "files": copy_base_files(base_dir, output)},
    }
    write_json(output / INFO_FILE, info)
    logger.info("Merged model (%s) saved to %s", type(merged).__name__, output)
    return output


def adapted_modules(peft_model) -> tuple[str, ...]:
    """The modules the adapter changes (LoRA-wrapped or trained whole), named as in the merged model."""
    prefix = "base_model.model."
    names = set()
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") or type(module).__name__ == "ModulesToSaveWrapper":
            names.add(name.removeprefix(prefix))
    return tuple(sorted(names))


def language_prefixes(model) -> tuple[str, ...]:
    """Where the language model's weights live in ``model``'s state dict (``model.language_model.``, ``lm_head.``)."""
    decoder = model.get_decoder()
    name = next(n for n, m in model.named_modules() if m is decoder)
    return (f"{name}.", "lm_head.")


def _module_kinds(names) -> list[str]:
    """``model.layers.0.self_attn.q_proj`` -> ``q_proj``: which kinds of module the adapter changed."""
    return sorted({n.rsplit(".", 1)[-1] for n in names})


def _export_adapter(base: str, base_path: str, adapter: Path, output: Path) -> Path:
    """The adapter, renamed for the base checkpoint's own class (what ``vllm serve --enable-lora`` binds)."""
    try:
        names, architecture = checkpoint_module_names(base_path)
        convert_adapter(adapter, output, names)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot export adapter {str(adapter)!r} for {base!r}: {first_line(exc)}") from exc
    if not (output / "chat_format.json").is_file():
        ChatFormat.load(adapter).save(output)
    write_json(output / INFO_FILE, {"base_model": base, "adapter": str(adapter), "layout": architecture})
    logger.info("Adapter for %s (%s layout) saved to %s", base, architecture, output)
    return output


def _check(model: str | None, adapter: Path, output: Path, *, overwrite: bool) -> str:
    """Validate the paths and return the base model to merge into; errors name the flag to change."""
    if model is not None and not model.strip():
        raise ModelLoadError("--model is empty")
    check_model_arguments(model, adapter)
    if output.resolve() == adapter.resolve():
        raise ConfigError("--output must differ from --adapter (the adapter would be overwritten)")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output exists and is not a folder: {output}")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConfigError(f"--output {output} is not empty; choose another folder or pass --overwrite")
    base = model or adapter_base_model(adapter)
    if not base:
        raise ConfigError("--model is required: the adapter does not record its base model")
    if model is None:
        try:
            check_model_arguments(base, None)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc} (recorded in the adapter); pass --model") from None
    return base


def _target_dtype(dtype: str, config) -> object:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    stored = getattr(config, "dtype", None) or getattr(config.get_text_config(), "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32
