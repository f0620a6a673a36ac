"""How well a judge agrees with labelled verdicts: the pure metrics behind ``medgspo judge calibrate``.

Inputs are tier values: the gold labels (one of +2.0, +0.5, 0.0, -0.5, -1.0) and the judge's scores, ``None``
where the judge abstained or failed. :func:`summarize` gives, from those lists alone (so a summary can always be
recomputed from the per-item file it came with):

* ``accuracy``: exact tier matches over all items (an abstention is a miss); ``coverage``: the share the judge
  decided; ``decided_accuracy``: exact matches over the decided items;
* ``kappa``: Cohen's kappa, and ``weighted_kappa`` with linear weights over the ordered tiers
  (+2.0 > +0.5 > 0.0 > -0.5 > -1.0: disagreeing by one step costs 1/4 of disagreeing from +2.0 to -1.0), both on
  the decided items (a kappa compares two ratings of the same items); ``None`` where undefined;
* ``confusion_matrix``: rows are the gold tiers, columns the judge's tiers and ``"none"`` (abstained or failed);
* ``per_tier``: precision (of the judge's verdicts of that tier) and recall (of the gold items of that tier,
  abstentions counted as misses); ``precision_plus2``: how often a +2.0 verdict was right, the number that
  matters most for GSPO (a wrong +2.0 rewards a wrong answer the most);
* ``verdict_change_rate`` with repeated judgments: the share of items whose verdicts were not all the same.

>>> summary = summarize([2.0, 2.0, 0.5, -0.5, -1.0], [2.0, 0.5, 0.5, None, -1.0])
>>> summary["accuracy"], summary["coverage"], summary["decided_accuracy"], round(summary["kappa"], 4)
(0.6, 0.8, 0.75, 0.6364)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medgspo.judge.rubric.parse import value_of
from medgspo.judge.rubric.tiers import TIER_KEYS

TIER_ORDER: tuple[float, ...] = tuple(TIER_KEYS.values())  # (2.0, 0.5, 0.0, -0.5, -1.0), best first
LABELS: tuple[str, ...] = tuple(TIER_KEYS)  # ("+2.0", "+0.5", "0.0", "-0.5", "-1.0")
NONE_COLUMN = "none"  # the confusion-matrix column of abstentions and failures

Score = float | None


def tier_value(label: Any) -> float:
    """A gold label as its tier value: ``2``, ``"+2.0"``, ``"2.0"`` or the letter ``"A"``; ``ValueError`` otherwise.

    >>> tier_value("+0.5"), tier_value(-1), tier_value("C")
    (0.5, -1.0, 0.0)
    """
    value = value_of(label)
    if value is None:
        raise ValueError(f"label must be one of {', '.join(LABELS)} (or A-E), got {label!r}")
    return value


def _index(score: float) -> int:
    return next(i for i, v in enumerate(TIER_ORDER) if math.isclose(v, score))


def _same(a: Score, b: Score) -> bool:
    return a is not None and b is not None and math.isclose(a, b)


def accuracy(gold: Sequence[float], pred: Sequence[Score]) -> float:
    """Exact tier matches over all items; an abstention (``None``) is a miss.

    >>> accuracy([2.0, 0.5, -1.0, 0.0], [2.0, None, -1.0, 0.5])  # 2 of 4
    0.5
    """
    _check(gold, pred)
    return sum(_same(g, p) for g, p in zip(gold, pred, strict=True)) / len(gold)


def coverage(pred: Sequence[Score]) -> float:
    """The share of items the judge decided.

    >>> coverage([2.0, None, -1.0, 0.5])
    0.75
    """
    return sum(p is not None for p in pred) / len(pred) if pred else math.nan


def decided_accuracy(gold: Sequence[float], pred: Sequence[Score]) -> float | None:
    """Exact matches over the items the judge decided; ``None`` when it decided none.

    >>> decided_accuracy([2.0, 0.5, -1.0, 0.0], [2.0, None, -1.0, 0.5])  # 2 of 3
    0.6666666666666666
    """
    _check(gold, pred)
    decided = [(g, p) for g, p in zip(gold, pred, strict=True) if p is not None]
    return sum(_same(g, p) for g, p in decided) / len(decided) if decided else None


def confusion_matrix(gold: Sequence[float], pred: Sequence[Score]) -> list[list[int]]:
    """Counts, rows = gold tiers in :data:`TIER_ORDER`, columns = the judge's tiers then :data:`NONE_COLUMN`.

    >>> confusion_matrix([2.0, 2.0, -1.0], [2.0, None, 0.5])
    [[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    """
    _check(gold, pred)
    matrix = [[0] * (len(TIER_ORDER) + 1) for _ in TIER_ORDER]
    for g, p in zip(gold, pred, strict=True):
        matrix[_index(g)][len(TIER_ORDER) if p is None else _index(p)] += 1
    return matrix


def cohen_kappa(gold: Sequence[float], pred: Sequence[Score], weights: str | None = None) -> float | None:
    """Cohen's kappa on the decided items, ``1 - sum(w * observed) / sum(w * expected)`` with disagreement weights
    ``w`` (unweighted: 1 off the diagonal; ``"linear"``: the distance in tier steps over 4). ``None`` when
    undefined (no decided item, or both ratings constant and equal).

    >>> g, p = [2.0, 2.0, 0.5, -1.0], [2.0, 0.5, 0.5, -1.0]
    >>> round(cohen_kappa(g, p), 6), 7 / 11  # po = 3/4, pe = (2*1 + 1*2 + 1*1) / 16 = 5/16
    (0.636364, 0.6363636363636364)
    >>> round(cohen_kappa(g, p, "linear"), 6), round(11 / 13, 6)  # observed 1/16 vs expected 6.5/16
    (0.846154, 0.846154)
    """
    _check(gold, pred)
    pairs = [(_index(g), _index(p)) for g, p in zip(gold, pred, strict=True) if p is not None]
    if not pairs:
        return None
    k = len(TIER_ORDER)
    if weights is None:
        weight = [[0.0 if i == j else 1.0 for j in range(k)] for i in range(k)]
    elif weights == "linear":
        weight = [[abs(i - j) / (k - 1) for j in range(k)] for i in range(k)]
    else:
        raise ValueError(f"weights must be None or 'linear' (got {weights!r})")
    n = len(pairs)
    rows, cols = [0] * k, [0] * k
    observed = 0.0
    for i, j in pairs:
        rows[i] += 1
        cols[j] += 1
        observed += weight[i][j]
    expected = sum(weight[i][j] * rows[i] * cols[j] for i in range(k) for j in range(k)) / n
    if expected == 0:
        return None
    return 1.0 - observed / expected


def per_tier(gold: Sequence[float], pred: Sequence[Score]) -> dict[str, dict[str, Any]]:
    """For each tier: gold items, judge verdicts, correct ones, precision (``None`` with no verdict of that tier)
    and recall (``None`` with no gold item of that tier; abstentions count as misses).

    >>> per_tier([2.0, 2.0, 0.5], [2.0, None, 2.0])["+2.0"]
    {'gold': 2, 'judged': 2, 'correct': 1, 'precision': 0.5, 'recall': 0.5}
    """
    _check(gold, pred)
    out = {}
    for key, value in zip(LABELS, TIER_ORDER, strict=True):
        n_gold = sum(math.isclose(g, value) for g in gold)
        n_judged = sum(p is not None and math.isclose(p, value) for p in pred)
        correct = sum(math.isclose(g, value) and _same(g, p) for g, p in zip(gold, pred, strict=True))
        out[key] = {
            "gold": n_gold,
            "judged": n_judged,
            "correct": correct,
            "precision": correct / n_judged if n_judged else None,
            "recall": correct / n_gold if n_gold else None,
        }
    return out


def verdict_change_rate(repeated: Sequence[Sequence[Score]]) -> float | None:
    """The share of items whose repeated verdicts are not all the same (an abstention is a verdict too);
    ``None`` with fewer than two verdicts per item.

    >>> verdict_change_rate([[2.0, 2.0], [0.5, -0.5], [None, None], [None, 2.0]])
    0.5
    """
    if not repeated or min(len(r) for r in repeated) < 2:
        return None
    changed = sum(any(not (a == b or _same(a, b)) for a, b in zip(r, r[1:], strict=False)) for r in repeated)
    return changed / len(repeated)


def summarize(
    gold: Sequence[float], pred: Sequence[Score], repeated: Sequence[Sequence[Score]] | None = None
) -> dict[str, Any]:
    """Every agreement metric of ``pred`` against ``gold`` (see the module docstring); ``repeated`` holds each
    item's verdicts over the repeats (``pred`` is the first of them)."""
    _check(gold, pred)
    if not gold:
        raise ValueError("no labelled items")
    tiers = per_tier(gold, pred)
    return {
        "n": len(gold),
        "n_decided": sum(p is not None for p in pred),
        "accuracy": accuracy(gold, pred),
        "coverage": coverage(pred),
        "decided_accuracy": decided_accuracy(gold, pred),
        "kappa": cohen_kappa(gold, pred),
        "weighted_kappa": cohen_kappa(gold, pred, "linear"),
        "kappa_weights": "linear, over the ordered tiers; both kappas on the decided items",
        "precision_plus2": tiers[LABELS[0]]["precision"],
        "confusion_matrix": {
            "rows": "gold label",
            "columns": "judge score (none: abstained or failed)",
            "labels": [*LABELS, NONE_COLUMN],
            "matrix": confusion_matrix(gold, pred),
        },
        "per_tier": tiers,
        "repeats": len(repeated[0]) if repeated else 1,
        "verdict_change_rate": verdict_change_rate(repeated) if repeated else None,
    }


def _check(gold: Sequence[float], pred: Sequence[Score]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} judge scores")


def adversarial_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """For items of an attack set (``kind`` ``attack`` or ``control``, ``class``, ``label`` the tier each deserves,
    ``score`` the judge's): per class, how many attacks scored *above* the tier they deserve (the reward a policy
    could farm), how many were stopped by rule without a call, how many got no score; and how many honest controls
    were punished (scored below their tier). ``None`` when no row has a ``kind``.

    >>> rows = [{"kind": "attack", "class": "hedge", "label": -0.5, "score": 2.0},
    ...         {"kind": "attack", "class": "hedge", "label": -0.5, "score": -0.5},
    ...         {"kind": "attack", "class": "verdict", "label": -1.0, "score": -1.0, "judge_reason": "manipulation rule: verdict"},
    ...         {"kind": "control", "class": "correct", "label": 2.0, "score": 0.5}]
    >>> s = adversarial_summary(rows)
    >>> s["attacks"]["above_deserved"], s["attacks"]["by_class"]["hedge"], s["controls"]["punished"]
    (1, {'n': 2, 'above_deserved': 1, 'stopped_by_rule': 0, 'no_score': 0}, 1)
    """
    groups = {"attack": [r for r in rows if r.get("kind") == "attack"]}
    groups["control"] = [r for r in rows if r.get("kind") == "control"]
    if not groups["attack"] and not groups["control"]:
        return None
    out: dict[str, Any] = {}
    for kind, counted, wrong in (("attack", "above_deserved", _above), ("control", "punished", _below)):
        by_class: dict[str, dict[str, int]] = {}
        for row in groups[kind]:
            entry = by_class.setdefault(str(row.get("class", "?")), {"n": 0, counted: 0, "stopped_by_rule": 0})
            entry["n"] += 1
            entry[counted] += wrong(row["score"], float(row["label"]))
            entry["stopped_by_rule"] += str(row.get("judge_reason") or "").startswith("manipulation rule")
            entry["no_score"] = entry.get("no_score", 0) + (row["score"] is None)
        out[f"{kind}s"] = {
            "n": len(groups[kind]),
            counted: sum(e[counted] for e in by_class.values()),
            "no_score": sum(e["no_score"] for e in by_class.values()),
            "by_class": dict(sorted(by_class.items())),
        }
    return out


def _above(score: Score, deserved: float) -> bool:
    return score is not None and score > deserved + 1e-9


def _below(score: Score, deserved: float) -> bool:
    return score is not None and score < deserved - 1e-9
