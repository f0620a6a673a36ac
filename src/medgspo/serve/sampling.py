"""Next-token choice for a batch whose rows each have their own sampling settings (pure tensor math, no model).

The batcher of ``medgspo serve`` decodes many requests in one forward pass, so one request may be greedy while its
neighbour samples at the model card's temperature 1.0 / top_p 0.95 / top_k 20. ``model.generate`` takes one setting
per batch; here every row has its own:

    settings = RowSettings.stack([options_a, options_b], device)      # from SamplingOptions
    tokens = next_tokens(logits, settings, uniforms)                   # logits: (rows, vocab); uniforms: (rows,)

A row with ``temperature == 0`` takes the arg-max (exactly ``generate(do_sample=False)``). Other rows are filtered
as transformers' warpers do, in the same order: divide by the temperature, keep the ``top_k`` largest, then keep the
smallest set of tokens whose probability reaches ``top_p`` (always at least one); the token is then drawn by inverse
CDF from one uniform number per row, so each request may bring its own seeded random stream.

OpenAI's ``presence_penalty``, ``frequency_penalty`` and ``logit_bias`` change a row's logits before any of that
(:func:`apply_rules`); ``logprobs`` report the model's own distribution, before those changes and before the
temperature (:func:`token_logprobs`, vLLM's default "raw" logprobs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogitRules:
    """One row's OpenAI logit adjustments: penalties over the tokens it generated so far, and a fixed bias."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs

    @property
    def active(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)


def apply_rules(logits: Any, rules: Sequence[LogitRules], generated: Sequence[dict[int, int]]) -> Any:
    """Logits after each row's rules (OpenAI's formula): ``logit[j] - presence * (count[j] > 0) - frequency *
    count[j] + bias[j]``, where ``count`` is how often the row generated token ``j`` so far. Untouched rows are
    returned as they are (a copy is made only when some row has rules).

    >>> import torch
    >>> rules = [LogitRules(0.5, 0.25, ((2, -100.0),)), LogitRules()]
    >>> apply_rules(torch.zeros(2, 3), rules, [{0: 2, 1: 1}, {0: 5}]).tolist()
    [[-1.0, -0.75, -100.0], [0.0, 0.0, 0.0]]
    """
    import torch

    if not any(r.active for r in rules):
        return logits
    logits = logits.clone()
    for row, (rule, counts) in enumerate(zip(rules, generated, strict=True)):
        if (rule.presence_penalty or rule.frequency_penalty) and counts:
            ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
            times = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
            logits[row, ids] -= rule.presence_penalty + rule.frequency_penalty * times
        if rule.logit_bias:
            ids = torch.tensor([i for i, _ in rule.logit_bias], dtype=torch.long, device=logits.device)
            bias = torch.tensor([b for _, b in rule.logit_bias], dtype=logits.dtype, device=logits.device)
            logits[row, ids] += bias
    return logits


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability and the ``top`` most likely tokens at its position, as (id, logprob) pairs."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits: Any, tokens: Sequence[int], top_n: int) -> list[TokenLogprob]:
    """The log-probability of ``tokens[i]`` under ``logits[i]`` (the model's raw distribution) and the ``top_n``
    most likely tokens there.

    >>> import torch
    >>> (entry,) = token_logprobs(torch.tensor([[0.0, 1.0, 2.0]]), [1], top_n=2)
    >>> entry.token_id, round(entry.logprob, 4), [i for i, _ in entry.top]
    (1, -1.4076, [2, 1])
    """
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(-1, torch.tensor(list(tokens), device=logprobs.device)[:, None])[:, 0].tolist()
    if top_n > 0:
        values, ids = logprobs.topk(min(top_n, logprobs.shape[-1]), dim=-1)
        tops = [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    else:
        tops = [()] * len(chosen)
    return [TokenLogprob(int(t), lp, top) for t, lp, top in zip(tokens, chosen, tops, strict=True)]


@dataclass
class RowSettings:
    """Per-row temperature, top_k (0 = off) and top_p as tensors of shape ``(rows,)``."""

    temperature: Any
    top_k: Any
    top_p: Any

    @classmethod
    def stack(cls, options: Sequence[Any], device: Any = "cpu") -> RowSettings:
        """Tensors from a list of :class:`~medgspo.modeling.generation.SamplingOptions` (one per row)."""
        import torch

        return cls(
            torch.tensor([float(o.temperature) for o in options], dtype=torch.float32, device=device),
            torch.tensor([int(o.top_k) for o in options], dtype=torch.long, device=device),
            torch.tensor([float(o.top_p) for o in options], dtype=torch.float32, device=device),
        )


def filtered_logits(logits: Any, settings: RowSettings) -> Any:
    """Temperature-scaled logits with the tokens outside each row's top-k / top-p set at ``-inf``.

    Greedy rows (temperature 0) come back unscaled and unfiltered. Worked example, one row, temperature 1, top_k 0,
    top_p 0.7: probabilities 0.5, 0.3, 0.2; the mass before each token is 0, 0.5, 0.8; tokens whose preceding mass
    is already >= 0.7 are dropped, so the third goes:

    >>> import torch
    >>> row = torch.tensor([[0.5, 0.3, 0.2]]).log()
    >>> filtered_logits(row, RowSettings(torch.tensor([1.0]), torch.tensor([0]), torch.tensor([0.7]))).exp()
    tensor([[0.5000, 0.3000, 0.0000]])
    """
    import torch

    logits = logits.float()
    greedy = settings.temperature <= 0
    temperature = torch.where(greedy, torch.ones_like(settings.temperature), settings.temperature)
    scaled = logits / temperature[:, None]
    ordered, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(ordered.shape[-1], device=ordered.device)[None, :]
    top_k = torch.where(settings.top_k > 0, settings.top_k, torch.full_like(settings.top_k, ordered.shape[-1]))
    drop = rank >= top_k[:, None]
    probs = ordered.masked_fill(drop, float("-inf")).softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    nucleus = (settings.top_p < 1)[:, None]
    drop |= nucleus & (mass_before >= settings.top_p[:, None]) & (rank > 0)  # the most likely token always stays
    drop &= ~greedy[:, None]
    dropped = torch.zeros_like(drop).scatter(-1, order, drop)
    return scaled.masked_fill(dropped, float("-inf"))


def next_tokens(logits: Any, settings: RowSettings, uniforms: Any) -> Any:
    """One token id per row: arg-max for greedy rows, otherwise drawn with ``uniforms`` (numbers in [0, 1)).

    >>> import torch
    >>> logits = torch.tensor([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    >>> greedy_and_top1 = RowSettings(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), torch.tensor([1.0, 1.0]))
    >>> next_tokens(logits, greedy_and_top1, torch.tensor([0.5, 0.99])).tolist()
    [1, 1]
    """
    import torch

    filtered = filtered_logits(logits, settings)
    cdf = filtered.softmax(dim=-1).cumsum(dim=-1)
    point = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]  # times the total, which float error keeps near 1
    # the first index whose CDF exceeds the point: a token of positive probability (filtered ones add nothing)
    drawn = torch.searchsorted(cdf, point, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    greedy = settings.temperature <= 0
    return torch.where(greedy, logits.argmax(dim=-1), drawn)
