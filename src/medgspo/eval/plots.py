"""``eval.png``: the open-ended evaluation's models side by side (mean score, format compliance, tiers).

Drawn by :class:`medgspo.eval.open_ended.OpenTask` after ``medgspo eval`` (and the pipeline's evaluation) from the
summaries of :func:`medgspo.eval.metrics.summarize_open`; matplotlib's Agg canvas, no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medgspo.judge.rubric.tiers import TIER_KEYS, TIERS, tier_legend

TIER_COLORS = ("#2ca02c", "#98df8a", "#c7c7c7", "#ff9896", "#d62728")  # best to worst, one per tier
FAILED_COLOR = "#ffffff"


def plot_summaries(summaries: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Mean score with its 95% CI, format compliance, and the tier distribution per model; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(summaries)
    xs = list(range(len(names)))
    fig = Figure(figsize=(4 + 2.2 * len(names), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_score, ax_format, ax_tiers = fig.subplots(1, 3)
    means, errors = score_bars(list(summaries.values()))
    ax_score.bar(xs, means, yerr=errors, capsize=4, color="#4c72b0")
    ax_score.set(title="mean judge score (95% CI)", ylim=(min(TIERS.values()) - 0.05, max(TIERS.values()) + 0.05))
    ax_score.axhline(0, color="black", linewidth=0.6)
    compliance = [s["format_compliance"] or 0.0 for s in summaries.values()]
    ax_format.bar(xs, compliance, color="#55a868")
    ax_format.set(title="format compliance", ylim=(0, 1.05))
    _stacked_tiers(ax_tiers, xs, list(summaries.values()))
    for ax in (ax_score, ax_format, ax_tiers):
        ax.set_xticks(xs, names, rotation=20, ha="right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def score_bars(summaries: list[Mapping[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Bar heights and asymmetric error bars ``[below, above]`` of the mean scores; no judged answer draws nothing.

    >>> score_bars([{"mean_score": 1.0, "score_ci_low": 0.5, "score_ci_high": 2.0},
    ...             {"mean_score": None, "score_ci_low": None, "score_ci_high": None}])
    ([1.0, nan], [[0.5, 0.0], [1.0, 0.0]])
    """
    means, below, above = [], [], []
    for s in summaries:
        judged = s["mean_score"] is not None
        means.append(s["mean_score"] if judged else math.nan)
        below.append(s["mean_score"] - s["score_ci_low"] if judged else 0.0)
        above.append(s["score_ci_high"] - s["mean_score"] if judged else 0.0)
    return means, [below, above]


def _stacked_tiers(ax: Any, xs: list[int], summaries: list[Mapping[str, Any]]) -> None:
    bottoms = [0.0] * len(xs)
    segments = [
        (tier_legend(label), [s["tier_counts"].get(key, 0) for s in summaries])
        for label, key in zip(TIERS, TIER_KEYS, strict=True)
    ]
    segments.append(("judge failed", [s["judge_failures"] for s in summaries]))
    for (label, counts), color in zip(segments, (*TIER_COLORS, FAILED_COLOR), strict=True):
        fractions = [c / s["n"] if s["n"] else 0.0 for c, s in zip(counts, summaries, strict=True)]
        ax.bar(xs, fractions, bottom=bottoms, color=color, edgecolor="#555555", linewidth=0.4, label=label)
        bottoms = [b + f for b, f in zip(bottoms, fractions, strict=True)]
    ax.set(title="tier distribution", ylim=(0, 1.05))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
