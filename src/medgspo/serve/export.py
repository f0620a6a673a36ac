"""Merge a LoRA adapter into its base model and save one standalone model folder (``medgspo export``).

    medgspo export --adapter runs/sft/adapter --output runs/merged                    # base read from the adapter
    medgspo export --model Qwen/Qwen3.5-4B --adapter runs/gspo/adapter --output runs/merged --dtype bfloat16

The folder holds the merged weights (safetensors), ``config.json``, ``generation_config.json``, the tokenizer with
its chat template, ``chat_format.json`` and ``medgspo_export.json`` (where it came from). It loads without PEFT
(``AutoModelForCausalLM.from_pretrained``, ``medgspo chat --model DIR``, ``vllm serve DIR``), uploads to the Hub
as is, and is what llama.cpp's ``convert_hf_to_gguf.py`` reads. Merging runs in float32 on the CPU, then the
weights are cast to ``--dtype`` (default: the base model's own dtype). The flags live in :mod:`medgspo.serve.cli`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medgspo.data.chat_format import ChatFormat
from medgspo.data.tiny_model import resolve_model_path
from medgspo.errors import ConfigError, ModelLoadError
from medgspo.modeling.loading import adapter_base_model, check_model_arguments, load_adapter
from medgspo.serve.engine import first_line
from medgspo.utils.io import write_json

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
INFO_FILE = "medgspo_export.json"


def merge_adapter(
    model: str | None, adapter: str | Path, output: str | Path, *, dtype: str = "auto", overwrite: bool = False
) -> Path:
    """Merge ``adapter`` into ``model`` (default: the base the adapter records) and save it all to ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, output = Path(adapter), Path(output)
    base = _check(model, adapter, output, overwrite=overwrite)
    base_path = resolve_model_path(base)
    logger.info("Merging %s into %s", adapter, base)
    try:
        lm = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        peft_model = load_adapter(lm, adapter)
    except (OSError, ValueError, RuntimeError) as exc:  # missing files, or an adapter made for another model
        raise ModelLoadError(f"cannot load {base!r} + adapter {str(adapter)!r}: {first_line(exc)}") from exc
    target_dtype = _target_dtype(dtype, lm.config)
    merged = peft_model.merge_and_unload().to(target_dtype)
    merged.config.dtype = target_dtype
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output)
    tokenizer_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_path
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(output)
    ChatFormat.load(adapter).save(output)
    info = {"base_model": base, "adapter": str(adapter), "dtype": str(target_dtype).removeprefix("torch.")}
    write_json(output / INFO_FILE, info)
    logger.info("Merged model saved to %s", output)
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
    stored = getattr(config, "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32
