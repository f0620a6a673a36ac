"""Load a base model (+ optional LoRA adapter) with its chat format, and generate answers in batches.

Shared by the pipeline's sample generations, evaluation and chat. The chat format is read from the adapter folder
(or the model folder) so inference lays out prompts exactly as training did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat, Split

logger = logging.getLogger(__name__)

# The model card's sampling settings for Qwen3.5-4B-Medical-GSPO.
CARD_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 20}


@dataclass
class Generation:
    """One generated completion and its split into thinking and answer."""

    question: str
    text: str
    split: Split
    n_tokens: int


def resolve_model_path(name_or_path: str | None) -> str:
    """``tiny`` (or nothing) means the embedded tiny model, built on first use."""
    from medgspo.data.tiny_model import ensure_tiny_model
    from medgspo.train.configs import TINY_MODEL

    if name_or_path in (None, "", TINY_MODEL):
        return str(ensure_tiny_model())
    return name_or_path


class AdapterMismatchError(ValueError):
    """A LoRA adapter whose weights name modules the base model does not have (it would load as a no-op)."""


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


def generate(
    model: Any,
    tokenizer: Any,
    chat_format: ChatFormat,
    questions: list[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    do_sample: bool = False,
    seed: int = 0,
    **sampling: Any,
) -> list[Generation]:
    """Generate one completion per question, ``batch_size`` prompts at a time (left-padded)."""
    import torch

    torch.manual_seed(seed)
    results: list[Generation] = []
    gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": tokenizer.pad_token_id}
    gen_kwargs.update({**CARD_SAMPLING, **sampling} if do_sample else sampling)
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        prompts = [chat_format.render_prompt(tokenizer, q) for q in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, **gen_kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        for question, ids in zip(chunk, new_tokens, strict=True):
            ids = ids[ids != tokenizer.pad_token_id]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            results.append(Generation(question, text, chat_format.split(text), int(ids.numel())))
    return results
