"""Generation shared by evaluation and serving: the model card's sampling defaults and batched generation.

``SamplingOptions`` holds one request's settings (the card's temperature 1.0, top_p 0.95, top_k 20 by default;
``temperature=0`` is greedy); :func:`generate` answers many questions in left-padded batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medgspo.data.chat_format import ChatFormat, Split
from medgspo.errors import UserError

# The model card's sampling settings for Qwen3.5-4B-Medical-GSPO.
CARD_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 20}


class OptionError(UserError):
    """A sampling option out of range; ``field`` is the :class:`SamplingOptions` field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
MAX_TOP_K = 2**31 - 1  # a top_k at or above the vocabulary keeps every token (the server also checks the vocabulary)


@dataclass
class SamplingOptions:
    """How to sample one completion; the defaults are the model card's. ``temperature=0`` means greedy."""

    temperature: float = CARD_SAMPLING["temperature"]
    top_p: float = CARD_SAMPLING["top_p"]
    top_k: int = CARD_SAMPLING["top_k"]
    max_new_tokens: int = 512
    seed: int | None = None

    def validate(self, name: Callable[[str], str] = str) -> None:
        """Raise ``ValueError`` naming the option to change; ``name`` maps a field to what the user calls it."""
        seed_ok = self.seed is None or SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]
        checks = {
            "temperature": (0 <= self.temperature <= 2, "must be between 0 and 2"),
            "top_p": (0 < self.top_p <= 1, "must be in (0, 1]"),
            "top_k": (0 <= self.top_k <= MAX_TOP_K, f"must be between 0 and {MAX_TOP_K}, 0 disables it"),
            "max_new_tokens": (self.max_new_tokens >= 1, "must be >= 1"),
            "seed": (seed_ok, f"must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}"),
        }
        for field_name, (ok, rule) in checks.items():
            if not ok:
                raise OptionError(field_name, f"{name(field_name)} {rule} (got {getattr(self, field_name)})")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }


@dataclass
class Generation:
    """One generated completion and its split into thinking and answer."""

    question: str
    text: str
    split: Split
    n_tokens: int


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
