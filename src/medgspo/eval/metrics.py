"""Evaluation metrics: confidence intervals, per-model summaries and the side-by-side Markdown tables.

Everything here is pure (no files, no models), so it is tested with literal rows and hand-worked values.
:mod:`medgspo.eval.open_ended` and :mod:`medgspo.eval.mcq` call it on the rows they generate and judge.

* :func:`bootstrap_ci`: percentile bootstrap of a mean (open-ended judge scores);
* :func:`wilson_interval`: Wilson score interval of a proportion (accuracies, format compliance);
* :func:`summarize_open` / :func:`markdown_table`: the open-ended evaluation (5-tier judge).

Multiple-choice accuracy and its tables are in :mod:`medgspo.eval.mcq_metrics`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from statistics import NormalDist, fmean
from typing import Any

from medgspo.judge.rubric.tiers import TIER_KEYS, tier_key
from medgspo.utils.stats import quantile


# ---- intervals ----------------------------------------------------------------------------------------------------
def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the mean of ``values``.

    Draws ``n_boot`` resamples of the same size with replacement (``random.Random(seed)``, so the same inputs and
    seed always give the same interval) and returns the ``alpha/2`` and ``1 - alpha/2`` quantiles of their means.
    No values gives ``(nan, nan)``; one value gives ``(v, v)``.

    Two values 0 and 2: a resample's mean is 0 (p=1/4), 1 (p=1/2) or 2 (p=1/4), so the 2.5% and 97.5% quantiles
    of 2000 resample means are 0 and 2.

    >>> bootstrap_ci([0.0, 2.0])
    (0.0, 2.0)
    >>> bootstrap_ci([0.5]), bootstrap_ci([1.0, 1.0, 1.0])
    ((0.5, 0.5), (1.0, 1.0))
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return math.nan, math.nan
    if n == 1 or min(data) == max(data):
        return data[0], data[0]
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(data, k=n)) / n for _ in range(n_boot))
    return quantile(means, alpha / 2), quantile(means, 1 - alpha / 2)


def wilson_interval(k: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score ``1 - alpha`` interval of a proportion ``k / n``; ``(0.0, 1.0)`` when ``n == 0``. ``k`` may be
    fractional: a mean count of correct answers over several samples of the same ``n`` questions.

    For 5 of 10 with z = 1.96: centre (0.5 + 1.96²/20) / (1 + 1.96²/10) = 0.5 and half-width
    1.96 * sqrt(0.025 + 1.96²/400) / 1.38416 = 0.2634, so (0.2366, 0.7634).

    >>> [round(x, 4) for x in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    >>> [round(x, 4) for x in wilson_interval(0, 10)]
    [0.0, 0.2775]
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ---- open-ended evaluation ----------------------------------------------------------------------------------------
def summarize_open(rows: Sequence[Mapping[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Summary of one model's judged answers.

    Each row has ``well_formed`` (bool), ``score`` (a tier value, or ``None`` when the judge failed or abstained),
    ``thinking`` and ``answer`` (str); an optional ``error`` starting with ``undecided`` marks an abstention of
    the offline reference judge. ``mean_score`` and its bootstrap interval are over judged rows only; ``None``
    scores are left out and counted in ``judge_failures`` (of which ``judge_abstained`` are abstentions).
    ``distinct_answers`` is the share of different answers among the non-empty ones: a policy that collapsed onto
    one answer for every question (a classic way to game a judge) shows up here. Values that cannot be computed
    (no rows, no judged rows) are ``None``.

    >>> rows = [
    ...     {"well_formed": True, "score": 2.0, "thinking": "想", "answer": "肺炎。"},
    ...     {"well_formed": True, "score": 0.5, "thinking": "想一想", "answer": "肺部感染"},
    ...     {"well_formed": False, "score": -1.0, "thinking": "", "answer": ""},
    ...     {"well_formed": True, "score": None, "thinking": "想", "answer": "再说", "error": "HTTP 503"},
    ... ]
    >>> s = summarize_open(rows)
    >>> s["n"], s["format_compliance"], s["mean_score"], s["judge_failures"]  # (2.0 + 0.5 - 1.0) / 3 = 0.5
    (4, 0.75, 0.5, 1)
    >>> s["tier_counts"], s["mean_think_chars"], s["mean_answer_chars"]  # (1+3+0+1)/4, (3+4+0+2)/4
    ({'+2.0': 1, '+0.5': 1, '0.0': 0, '-0.5': 0, '-1.0': 1}, 1.25, 2.25)
    >>> s["distinct_answers"]  # 3 different answers among 3 non-empty ones
    1.0
    """
    n = len(rows)
    scores = [float(r["score"]) for r in rows if r.get("score") is not None]
    failures = [r for r in rows if r.get("score") is None]
    tiers = dict.fromkeys(TIER_KEYS, 0)
    for score in scores:
        key = tier_key(score)
        if key is not None:
            tiers[key] += 1
    low, high = bootstrap_ci(scores, n_boot=n_boot, seed=seed) if scores else (None, None)
    return {
        "n": n,
        "format_compliance": _share(rows, "well_formed"),
        "mean_score": fmean(scores) if scores else None,
        "score_ci_low": low,
        "score_ci_high": high,
        "judged": len(scores),
        "tier_counts": tiers,
        "mean_think_chars": fmean(len(r["thinking"]) for r in rows) if rows else None,
        "mean_answer_chars": fmean(len(r["answer"]) for r in rows) if rows else None,
        "distinct_answers": _distinct([r["answer"].strip() for r in rows if r["answer"].strip()]),
        "judge_failures": len(failures),
        "judge_abstained": sum(str(r.get("error") or "").startswith("undecided") for r in failures),
    }


def _distinct(answers: list[str]) -> float | None:
    return len(set(answers)) / len(answers) if answers else None


def _share(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The fraction of rows whose ``key`` is true (format compliance); ``None`` for no rows."""
    return sum(bool(r[key]) for r in rows) / len(rows) if rows else None


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown table, one row per model, from :func:`summarize_open` outputs keyed by model name.

    >>> s = summarize_open([{"well_formed": True, "score": 2.0, "thinking": "想", "answer": "肺炎"}])
    >>> print(markdown_table({"sft": s}).splitlines()[-1])
    | sft | 1 | 100.0% | 2.00 [2.00, 2.00] | 1 / 0 / 0 / 0 / 0 | 1 / 2 | 100.0% | 0 |
    """
    tiers = " / ".join(TIER_KEYS)
    header = ["model", "n", "format compliance", "mean score [95% CI]", f"tiers {tiers}", "think / answer chars"]
    header += ["distinct answers", "judge failures"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---|---|---:|---:|---:|"]
    for name, s in summaries.items():
        score = f"{_num(s['mean_score'])} [{_num(s['score_ci_low'])}, {_num(s['score_ci_high'])}]"
        counts = " / ".join(str(s["tier_counts"].get(key, 0)) for key in TIER_KEYS)
        lengths = f"{_num(s['mean_think_chars'], 0)} / {_num(s['mean_answer_chars'], 0)}"
        failures = str(s["judge_failures"])
        if s.get("judge_abstained"):
            failures += f" ({s['judge_abstained']} abstained)"
        distinct = _pct(s.get("distinct_answers"))
        cells = [name, s["n"], _pct(s["format_compliance"]), score, counts, lengths, distinct, failures]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)
