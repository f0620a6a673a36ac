"""What the judge did and what it cost: judgments, calls, cache hits, retries, failures, tokens, latency.

:class:`JudgeStats` is filled per batch and merged into a run-level object; :meth:`JudgeStats.metrics` gives the
scalars that the GSPO reward logs and :func:`summary_lines` the text the CLI prints. Costs are estimates from
prices per million tokens (:class:`~medgspo.judge.pricing.Prices`); provider cache-hit tokens (DeepSeek's
``usage.prompt_cache_hit_tokens``, OpenAI/vLLM's ``usage.prompt_tokens_details.cached_tokens``) are billed at the
cached-input price. Everything here is pure.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from medgspo.judge.pricing import Prices
from medgspo.judge.rubric.manipulation import MANIPULATION_REASON
from medgspo.judge.rubric.tiers import TIERS
from medgspo.utils.stats import quantile


@dataclass
class Judgment:
    """The verdict on one item. ``score`` is ``None`` when the judge failed or abstained (``error`` says why);
    it is never a made-up 0.0, which is a real tier.

    ``source`` is ``"judge"`` (an API call), ``"cache"``, ``"rule"`` (no answer or a manipulating one: -1.0
    without a call), ``"floor"`` (the judge replied but never parsably: the configured floor) or ``"reference"``
    (the offline heuristic).
    """

    score: float | None
    label: str | None = None
    error: str | None = None
    cached: bool = False
    reason: str | None = None
    source: str = "judge"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Usage(NamedTuple):
    """Token counts of one API response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


def usage_from_response(data: dict[str, Any]) -> Usage:
    """Token counts from a chat-completions response body (missing fields count as 0).

    >>> usage_from_response({"usage": {"prompt_tokens": 90, "completion_tokens": 9, "prompt_cache_hit_tokens": 64}})
    Usage(prompt_tokens=90, completion_tokens=9, cached_prompt_tokens=64)
    """
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details") or {}
    cached = usage.get("prompt_cache_hit_tokens")
    if cached is None and isinstance(details, dict):
        cached = details.get("cached_tokens")
    return Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), _int(cached))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100); ``nan`` for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 99)
    (2.5, 5.0)
    """
    return quantile(values, q / 100)


_COUNTERS = tuple(
    "judgments calls cache_hits deduplicated rule_scored manipulation unparsed retries reasks failures abstained "
    "prompt_tokens "
    "completion_tokens cached_prompt_tokens".split()
)


@dataclass
class JudgeStats:
    """Counters for one batch or one run. ``calls`` are HTTP requests (re-asks and retries included)."""

    judgments: int = 0
    calls: int = 0
    cache_hits: int = 0
    deduplicated: int = 0
    rule_scored: int = 0
    manipulation: int = 0  # of rule_scored: grading or instruction text in the answer (-1.0 without a call)
    unparsed: int = 0  # replies given but never parsed (after the re-asks): scored the floor, not a failure
    retries: int = 0
    reasks: int = 0
    failures: int = 0
    abstained: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    tiers: Counter = field(default_factory=Counter)
    failure_reasons: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def record_call(self, usage: Usage | None, latency_s: float | None) -> None:
        """One HTTP request; ``usage``/``latency_s`` are ``None`` when no response came back."""
        self.calls += 1
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.cached_prompt_tokens += usage.cached_prompt_tokens
        if latency_s is not None:
            self.latencies.append(latency_s)

    def record(self, judgment: Judgment, *, duplicate: bool = False) -> None:
        """One finished judgment (a duplicate is an identical item of the same batch, judged once)."""
        self.judgments += 1
        if duplicate:
            self.deduplicated += 1
        elif judgment.source == "cache":
            self.cache_hits += 1
        elif judgment.source == "rule":
            self.rule_scored += 1
            self.manipulation += (judgment.reason or "").startswith(MANIPULATION_REASON)
        if judgment.source == "floor":
            self.unparsed += 1
        if judgment.label is not None:
            self.tiers[judgment.label] += 1
        elif judgment.error is not None and judgment.source == "reference":
            self.abstained += 1
        elif judgment.error is not None:
            self.failures += 1
            self.failure_reasons[_reason_kind(judgment.error)] += 1

    def merge(self, other: JudgeStats) -> None:
        """Add another batch's counts into this one (wall time adds up too)."""
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.tiers.update(other.tiers)
        self.failure_reasons.update(other.failure_reasons)
        self.latencies.extend(other.latencies)
        self.wall_s += other.wall_s

    def cost(self, prices: Prices) -> float:
        return prices.cost(self.prompt_tokens, self.cached_prompt_tokens, self.completion_tokens)

    def latency_percentiles(self) -> dict[str, float]:
        return {f"p{q}": percentile(self.latencies, q) for q in (50, 90, 99)} | {
            "max": max(self.latencies, default=math.nan)
        }

    def metrics(self, prices: Prices | None = None, prefix: str = "judge/") -> dict[str, float]:
        """Scalars for a training logger: per-tier counts, failure and cache-hit rates, calls, tokens, latency."""
        n = max(self.judgments, 1)
        out = {f"{prefix}tier_{label}": float(self.tiers.get(label, 0)) for label in TIERS}
        out |= {
            f"{prefix}failures": float(self.failures),
            f"{prefix}failure_rate": self.failures / n,
            f"{prefix}cache_hit_rate": (self.cache_hits + self.deduplicated) / n,
            f"{prefix}calls": float(self.calls),
            f"{prefix}retries": float(self.retries),
            f"{prefix}prompt_tokens": float(self.prompt_tokens),
            f"{prefix}completion_tokens": float(self.completion_tokens),
            f"{prefix}cached_prompt_tokens": float(self.cached_prompt_tokens),
        }
        if self.abstained:
            out[f"{prefix}abstained"] = float(self.abstained)
        if self.manipulation:
            out[f"{prefix}manipulation"] = float(self.manipulation)
        if self.unparsed:
            out[f"{prefix}unparsed"] = float(self.unparsed)
        if self.latencies:
            pct = self.latency_percentiles()
            out |= {f"{prefix}latency_p50_s": pct["p50"], f"{prefix}latency_p90_s": pct["p90"]}
        if prices is not None:
            out[f"{prefix}cost_usd"] = self.cost(prices)
        return out

    def summary(self, prices: Prices) -> dict[str, Any]:
        """A JSON-friendly dict of everything (for reports and logs)."""
        data = {k: v for k, v in asdict(self).items() if k != "latencies"}
        data["tiers"] = {label: self.tiers.get(label, 0) for label in TIERS}
        data["failure_reasons"] = dict(self.failure_reasons)
        data["latency_s"] = {
            k: (None if math.isnan(v) else round(v, 4)) for k, v in self.latency_percentiles().items()
        }
        data["cost_usd"] = round(self.cost(prices), 6)
        return data


def _reason_kind(error: str) -> str:
    """The leading words of an error message, e.g. ``"deadline exceeded"`` or ``"HTTP 503"``."""
    return error.split(":", 1)[0].strip()[:60]


def summary_lines(stats: JudgeStats, prices: Prices) -> list[str]:
    """Human-readable summary of a run (the CLI prints these)."""
    tiers = " ".join(f"{label}({value:+.1f})={stats.tiers.get(label, 0)}" for label, value in TIERS.items())
    n = max(stats.judgments, 1)
    lines = [
        f"judgments: {stats.judgments} in {stats.wall_s:.1f} s | {tiers}",
        f"failed: {stats.failures} ({100 * stats.failures / n:.1f}%)"
        + (f" {dict(stats.failure_reasons)}" if stats.failure_reasons else "")
        + (f" | abstained: {stats.abstained}" if stats.abstained else "")
        + (f" | never parsed (scored the floor): {stats.unparsed}" if stats.unparsed else ""),
        f"calls: {stats.calls} | cache hits: {stats.cache_hits} | duplicates: {stats.deduplicated}"
        f" | -1.0 by rule without a call: {stats.rule_scored} ({stats.manipulation} manipulation) | retries: {stats.retries} | re-asks: {stats.reasks}",
        f"tokens: prompt {stats.prompt_tokens:,} (provider cache hits {stats.cached_prompt_tokens:,})"
        f" | completion {stats.completion_tokens:,} | estimated cost ${stats.cost(prices):.4f}",
    ]
    if stats.latencies:
        pct = stats.latency_percentiles()
        lines.append("latency: " + " ".join(f"{k}={v:.2f}s" for k, v in pct.items()))
    return lines
