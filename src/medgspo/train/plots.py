"""PNG plots of GSPO training dynamics, read from ``metrics.jsonl``.

Four figures: reward (raw and smoothed), KL to the reference (or the clip fractions when KL is not computed),
completion length, and the judge's tier mix over steps. Matplotlib's ``Agg`` backend: no display needed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medgspo.judge.rubric.tiers import TIERS, tier_legend

logger = logging.getLogger(__name__)

TIER_LABELS = {label: tier_legend(label) for label in TIERS}


def read_metrics(path: Path) -> list[dict]:
    """The logged rows, one per training log step (later rows win when a resumed run logs a step again)."""
    rows: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of one metric, skipping rows without it."""
    pairs = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


NO_SCORE = "no score (abstained or failed)"


def tier_fractions(rows: list[dict]) -> dict[str, list[float]]:
    """Per-step share of each judge tier, and of completions the judge gave no score, among all judged completions.

    >>> tier_fractions([{"judge/tier_A": 1, "judge/tier_E": 2, "judge/abstained": 1, "judge/failures": 0}])["E"]
    [0.5]
    """
    fractions: dict[str, list[float]] = {label: [] for label in [*TIER_LABELS, NO_SCORE]}
    for row in rows:
        counts = {label: row.get(f"judge/tier_{label}", 0.0) or 0.0 for label in TIER_LABELS}
        counts[NO_SCORE] = (row.get("judge/abstained", 0.0) or 0.0) + (row.get("judge/failures", 0.0) or 0.0)
        total = sum(counts.values()) or 1.0
        for label in fractions:
            fractions[label].append(counts[label] / total)
    return fractions


def plot_training(metrics_path: Path, out_dir: Path) -> list[Path]:
    """Write the four PNGs into ``out_dir``; return their paths (none when nothing was logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(Path(metrics_path))
    if not rows:
        logger.warning("No metrics in %s; no plots written.", metrics_path)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw, width in PLOTS:
        fig, ax = plt.subplots(figsize=(width, 3.5))
        draw(ax, rows)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def draw_reward(ax: Any, rows: list[dict]) -> None:
    ax.plot(*series(rows, "reward"), alpha=0.35, label="reward (batch mean)")
    ax.plot(*series(rows, "reward_smoothed"), linewidth=2, label="reward (EMA 0.9)")
    ax.set(xlabel="optimizer step", ylabel="weighted reward", title="Reward")
    ax.legend()


def draw_kl_and_clipping(ax: Any, rows: list[dict]) -> None:
    if series(rows, "kl")[0]:
        ax.plot(*series(rows, "kl"), label="KL to reference")
        ax.set(title="KL divergence")
    else:
        ax.set(title="KL not computed (beta = 0); clip fractions instead")
    for key in ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean"):
        if series(rows, key)[0]:
            ax.plot(*series(rows, key), linestyle="--", label=key)
    ax.set(xlabel="optimizer step")
    ax.legend()


def draw_completion_length(ax: Any, rows: list[dict]) -> None:
    ax.plot(*series(rows, "completions/mean_length"), label="completion tokens (mean)")
    if series(rows, "answer_chars_mean")[0]:
        ax2 = ax.twinx()
        ax2.plot(*series(rows, "answer_chars_mean"), color="tab:orange", label="answer characters (mean)")
        ax2.set_ylabel("answer characters")
    ax.set(xlabel="optimizer step", ylabel="tokens", title="Completion length")


def draw_tier_mix(ax: Any, rows: list[dict]) -> None:
    judged = [r for r in rows if "judge/tier_A" in r]  # rollout steps only
    fractions = tier_fractions(judged)
    labels = [*TIER_LABELS.values(), NO_SCORE]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "lightgray"]
    ax.stackplot([r["step"] for r in judged], *fractions.values(), labels=labels, colors=colors)
    ax.set(xlabel="optimizer step", ylabel="share of completions", title="Judge tier mix", ylim=(0, 1))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)  # outside: the bands fill the axes


# (file name, drawing, figure width): the four plots of a GSPO run
PLOTS = (
    ("reward.png", draw_reward, 6),
    ("kl_and_clipping.png", draw_kl_and_clipping, 6),
    ("completion_length.png", draw_completion_length, 6),
    ("tier_mix.png", draw_tier_mix, 8),
)
