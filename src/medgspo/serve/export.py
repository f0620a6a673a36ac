"""``medgspo export``: merge a LoRA adapter into its base model and save one standalone model folder.

    medgspo export --adapter runs/sft/adapter --output runs/merged                    # base read from the adapter
    medgspo export --model Qwen/Qwen3.5-4B --adapter runs/gspo/adapter --output runs/merged --dtype bfloat16

The folder holds the merged weights (safetensors), ``config.json``, ``generation_config.json``, the tokenizer with
its chat template, ``chat_format.json`` and ``medgspo_export.json`` (where it came from). It loads without PEFT
(``AutoModelForCausalLM.from_pretrained``, ``medgspo chat --model DIR``, ``vllm serve DIR``), uploads to the Hub
as is, and is what llama.cpp's ``convert_hf_to_gguf.py`` reads. Merging runs in float32 on the CPU, then the
weights are cast to ``--dtype`` (default: the base model's own dtype).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medgspo.data.chat_format import FORMAT_FILE, ChatFormat
from medgspo.serve.chat import ModelLoadError, adapter_base_model, check_model_arguments

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
INFO_FILE = "medgspo_export.json"


def merge_adapter(model: str | None, adapter: str | Path, output: str | Path, *, dtype: str = "auto",
                  overwrite: bool = False) -> Path:  # fmt: skip
    """Merge ``adapter`` into ``model`` (default: the base the adapter records) and save it all to ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgspo.utils.models import load_adapter, resolve_model_path

    adapter, output = Path(adapter), Path(output)
    base = _check(model, adapter, output, overwrite=overwrite)
    base_path = resolve_model_path(base)
    logger.info("Merging %s into %s", adapter, base)
    try:
        lm = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        peft_model = load_adapter(lm, adapter)
    except (OSError, ValueError, RuntimeError) as exc:  # missing files, or an adapter made for another model
        raise ModelLoadError(f"cannot load {base!r} + adapter {str(adapter)!r}: {_first_line(exc)}") from exc
    target_dtype = _target_dtype(dtype, lm.config)
    merged = peft_model.merge_and_unload().to(target_dtype)
    merged.config.dtype = target_dtype
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output)
    tokenizer_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_path
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(output)
    ChatFormat.load(adapter).save(output)
    info = {"base_model": base, "adapter": str(adapter), "dtype": str(target_dtype).removeprefix("torch.")}
    (output / INFO_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    logger.info("Merged model saved to %s", output)
    return output


def _check(model: str | None, adapter: Path, output: Path, *, overwrite: bool) -> str:
    """Validate the paths and return the base model to merge into; errors name the flag to change."""
    if model is not None and not model.strip():
        raise ModelLoadError("--model is empty")
    check_model_arguments(model, adapter)
    if output.resolve() == adapter.resolve():
        raise ValueError("--output must differ from --adapter (the adapter would be overwritten)")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output exists and is not a folder: {output}")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ValueError(f"--output {output} is not empty; choose another folder or pass --overwrite")
    base = model or adapter_base_model(adapter)
    if not base:
        raise ValueError("--model is required: the adapter does not record its base model")
    if model is None:
        try:
            check_model_arguments(base, None)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc} (recorded in the adapter); pass --model") from None
    return base


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _target_dtype(dtype: str, config) -> object:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    stored = getattr(config, "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32


# ---- command line -----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``parser``."""
    parser.add_argument("--model", default=None,
                        help="base model (folder, Hub id or `tiny`); default: the one recorded in the adapter")  # fmt: skip
    parser.add_argument("--adapter", required=True, help="LoRA adapter folder (e.g. the output of `medgspo sft`)")
    parser.add_argument("--output", required=True, help="folder to write the merged model to")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="dtype of the saved weights (default: the base model's)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output folder")


def run(args: argparse.Namespace) -> int:
    """Run ``medgspo export``; returns the exit code (one-line errors for user mistakes)."""
    try:
        output = merge_adapter(args.model, args.adapter, args.output, dtype=args.dtype, overwrite=args.overwrite)
    except ValueError as exc:
        sys.stderr.write(f"medgspo export: error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"medgspo export: error: cannot export to {args.output}: {exc}\n")
        return 2
    files = sorted(p.name for p in output.iterdir())
    sys.stdout.write(
        f"Merged model: {output}\n  files: {', '.join(files)}\n  {FORMAT_FILE} copied from {args.adapter}\n"
    )
    return 0
