"""What the run found, in plain statements (pure): GSPO against SFT per split (marginal intervals and the paired
difference question by question), the training reward and tier mix, clipping, and whether GSPO kept its variety.

:func:`paired_scores` is the headline of ``summary.json`` and README: the same questions, both models judged, the
mean difference with a 95% bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medgspo.eval.metrics import bootstrap_ci


def _interval(s: Mapping[str, Any]) -> str:
    if s.get("mean_score") is None:
        return "no judged answers"
    return f"{s['mean_score']:+.2f} [{s['score_ci_low']:+.2f}, {s['score_ci_high']:+.2f}]"


def compare_scores(sft: Mapping[str, Any], gspo: Mapping[str, Any]) -> str:
    """GSPO's mean judged score against SFT's, and whether their 95% intervals are apart.

    >>> a = {"mean_score": -1.0, "score_ci_low": -1.0, "score_ci_high": -1.0}
    >>> compare_scores(a, {"mean_score": 0.2, "score_ci_low": -0.3, "score_ci_high": 0.8})
    'GSPO +0.20 [-0.30, +0.80] vs SFT -1.00 [-1.00, -1.00]: GSPO higher, intervals do not overlap'
    """
    text = f"GSPO {_interval(gspo)} vs SFT {_interval(sft)}"
    if gspo.get("mean_score") is None or sft.get("mean_score") is None:
        return text
    if gspo["score_ci_low"] > sft["score_ci_high"]:
        return text + ": GSPO higher, intervals do not overlap"
    if gspo["score_ci_high"] < sft["score_ci_low"]:
        return text + ": GSPO lower, intervals do not overlap"
    return text + ": the intervals overlap (no difference shown)"


def paired_scores(rows: list[Mapping[str, Any]], a: str = "sft", b: str = "gspo") -> dict[str, Any] | None:
    """Model ``b``'s score minus ``a``'s on the same questions (both judged): ``{"n", "mean", "ci"}`` with a 95%
    bootstrap interval, or ``None`` when no question was judged for both.

    Pairing removes the spread between questions, so it can show a difference two separate intervals cannot.

    >>> rows = [{"model": m, "question": q, "score": s} for m, q, s in
    ...         [("sft", "q1", -1.0), ("gspo", "q1", 2.0), ("sft", "q2", 2.0), ("gspo", "q2", 2.0),
    ...          ("sft", "q3", None), ("gspo", "q3", 2.0)]]
    >>> paired_scores(rows)
    {'n': 2, 'mean': 1.5, 'ci': [0.0, 3.0]}
    """
    scores: dict[str, dict[str, float]] = {a: {}, b: {}}
    for row in rows:
        if row.get("model") in scores and row.get("score") is not None:
            scores[row["model"]][row["question"]] = float(row["score"])
    both = [q for q in scores[b] if q in scores[a]]
    if not both:
        return None
    diffs = [scores[b][q] - scores[a][q] for q in both]
    low, high = bootstrap_ci(diffs)
    return {"n": len(both), "mean": sum(diffs) / len(diffs), "ci": [low, high]}


def paired_difference(rows: list[Mapping[str, Any]], a: str = "sft", b: str = "gspo") -> str | None:
    """:func:`paired_scores` as a sentence.

    >>> rows = [{"model": m, "question": "q1", "score": s} for m, s in [("sft", -1.0), ("gspo", 2.0)]]
    >>> paired_difference(rows)
    'paired, GSPO minus SFT on the 1 questions both were judged on: +3.00 [+3.00, +3.00]'
    """
    paired = paired_scores(rows, a, b)
    if paired is None:
        return None
    low, high = paired["ci"]
    return (
        f"paired, {b.upper()} minus {a.upper()} on the {paired['n']} questions "
        f"both were judged on: {paired['mean']:+.2f} [{low:+.2f}, {high:+.2f}]"
    )


def _quarters(values: list[float]) -> tuple[float, float]:
    quarter = max(1, len(values) // 4)
    first, last = values[:quarter], values[-quarter:]
    return sum(first) / len(first), sum(last) / len(last)


def training_notes(gspo_rows: list[Mapping[str, Any]]) -> list[str]:
    """The GSPO reward and the judge's +2.0 share, first quarter of the steps against the last, and clipping."""
    rewards = [r["reward"] for r in gspo_rows if "reward" in r]
    if not rewards:
        return []
    f, la = _quarters(rewards)
    notes = [
        f"GSPO training reward {'rose' if la > f else 'did not rise'}: first-quarter mean {f:.3f} -> last {la:.3f}."
    ]
    tiers = [r for r in gspo_rows if "judge/tier_A" in r]
    if tiers:
        shares = [
            r["judge/tier_A"]
            / max(1.0, sum(r.get(f"judge/tier_{t}", 0.0) for t in "ABCDE") + r.get("judge/abstained", 0.0))
            for r in tiers
        ]
        f, la = _quarters(shares)
        notes.append(
            f"Rollouts the judge scored +2.0 during GSPO: {f:.0%} of the first quarter's -> {la:.0%} of the last's."
        )
    clipped = [r["clip_ratio/region_mean"] for r in gspo_rows if "clip_ratio/region_mean" in r] or [0.0]
    notes.append(
        f"Sequences clipped by GSPO: max {max(clipped):.0%} of a minibatch, mean {sum(clipped) / len(clipped):.1%}."
    )
    return notes


def findings(
    summaries: Mapping[str, Mapping[str, Mapping[str, Any]]],
    gspo_rows: list[Mapping[str, Any]],
    generations: Mapping[str, list[Mapping[str, Any]]] | None = None,
) -> list[str]:
    """Plain statements of what each stage did, including when it did nothing visible."""
    notes = []
    for split, by_model in summaries.items():
        base, sft, gspo = (by_model.get(k) for k in ("base", "sft", "gspo"))
        steps = " -> ".join(f"{name} {s['format_compliance']:.0%}" for name, s in by_model.items())
        notes.append(f"Format compliance on {split} questions: {steps}.")
        if sft and gspo:
            paired = paired_difference((generations or {}).get(split, []))
            notes.append(
                f"Mean judged score on {split} questions: {compare_scores(sft, gspo)}"
                + (f"; {paired}." if paired else ".")
            )
    notes += training_notes(gspo_rows)
    held = summaries.get("heldout", {})
    notes += collapse_warning(held.get("sft"), held.get("gspo"))
    return notes


def collapse_warning(sft: Mapping[str, Any] | None, gspo: Mapping[str, Any] | None) -> list[str]:
    """Whether GSPO kept at least half of SFT's distinct answers on held-out questions; a plain warning if not.

    >>> collapse_warning({"distinct_answers": 0.9}, {"distinct_answers": 0.1})[0][:46]
    'GSPO answers collapsed: 10% distinct vs 90% af'
    >>> collapse_warning({"distinct_answers": 0.9}, {"distinct_answers": 0.8})[0][:43]
    'GSPO kept its variety: 80% distinct answers'
    """
    before, after = (sft or {}).get("distinct_answers"), (gspo or {}).get("distinct_answers")
    if before is None or after is None:
        return []
    if after >= 0.5 * before:
        return [
            f"GSPO kept its variety: {after:.0%} distinct answers on held-out questions vs {before:.0%} after SFT."
        ]
    return [
        f"GSPO answers collapsed: {after:.0%} distinct vs {before:.0%} after SFT on held-out questions. The policy "
        "found a few answers its judge scores better than its usual ones and gives them to every question: reward "
        "hacking, not medical skill. Read the reward curve with this in mind."
    ]
