"""``confusion_matrix.png`` of ``medgspo judge calibrate``: gold tiers down, the judge's verdicts across, counts in
the cells and each row shaded by its share (so a 24-item tier and a 3-item tier read alike). Matplotlib's Agg
canvas, no display needed; drawn from a :func:`medgspo.judge.calibration.metrics.summarize` dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_confusion(summary: dict[str, Any], path: str | Path) -> Path:
    """Draw the confusion matrix of ``summary`` to ``path`` (PNG); returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = summary["confusion_matrix"]
    labels, matrix = cm["labels"], cm["matrix"]
    rows = labels[: len(matrix)]
    shares = [[c / max(sum(row), 1) for c in row] for row in matrix]
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if shares[i][j] > 0.6 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=10)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="judge verdict (none: abstained or failed)", ylabel="gold label")
    judge = summary.get("judge", {})
    name = judge.get("model") or judge.get("backend", "judge")
    ax.set_title(
        f"{name}: accuracy {summary['accuracy']:.2f}, coverage {summary['coverage']:.2f}, n={summary['n']}",
        fontsize=10,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
