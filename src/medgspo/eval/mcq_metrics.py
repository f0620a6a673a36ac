"""Multiple-choice metrics and tables (pure: literal rows in, numbers and Markdown out).

:mod:`medgspo.eval.mcq` scores every answer into a row (``item``, ``sample``, ``correct``, ``prediction``,
``well_formed``, ``subject``), then:

* :func:`summarize_benchmark`: one model on one benchmark: accuracy (the mean over ``--num_samples`` samples) with
  a 95% Wilson interval over the ``n`` questions, the spread over samples, unreadable answers, per subject;
* :func:`results_rows` / :func:`results_table`: the benchmark x model table (``mcq.md``, ``mcq_table.json``);
* :func:`subject_table`: subject x model for one benchmark (CMMLU's subjects, CMB's exams, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean, stdev
from typing import Any

from medgspo.eval.metrics import wilson_interval

Row = Mapping[str, Any]


def accuracy_over_samples(rows: Sequence[Row]) -> dict[str, Any]:
    """Accuracy of rows that answer ``n`` items ``K`` times each (``item``, ``sample``, ``correct``).

    ``accuracy`` is the mean of the K per-sample accuracies; its 95% Wilson interval is taken over the n questions
    at that rate (the questions, not the K x n answers, are the independent draws); ``accuracy_sd`` is the sample
    standard deviation of the K accuracies (``None`` for K = 1), ``accuracy_min``/``accuracy_max`` their range.

    Two questions, two samples: sample 0 gets 1 of 2 right (0.5), sample 1 gets 2 of 2 (1.0), so the accuracy is
    0.75 and sd = |1.0 - 0.5| / sqrt(2) = 0.3536.

    >>> rows = [{"item": 0, "sample": 0, "correct": True}, {"item": 1, "sample": 0, "correct": False},
    ...         {"item": 0, "sample": 1, "correct": True}, {"item": 1, "sample": 1, "correct": True}]
    >>> s = accuracy_over_samples(rows)
    >>> s["n"], s["samples"], s["accuracy"], round(s["accuracy_sd"], 4), s["sample_accuracies"]
    (2, 2, 0.75, 0.3536, [0.5, 1.0])
    """
    items = {r["item"] for r in rows}
    samples = sorted({r["sample"] for r in rows})
    n = len(items)
    per_sample = [sum(bool(r["correct"]) for r in rows if r["sample"] == k) / n for k in samples] if n else []
    accuracy = fmean(per_sample) if per_sample else None
    low, high = wilson_interval(accuracy * n, n) if accuracy is not None else (None, None)
    return {
        "n": n,
        "samples": len(samples),
        "accuracy": accuracy,
        "ci_low": low,
        "ci_high": high,
        "accuracy_sd": stdev(per_sample) if len(per_sample) > 1 else None,
        "accuracy_min": min(per_sample) if per_sample else None,
        "accuracy_max": max(per_sample) if per_sample else None,
        "sample_accuracies": per_sample,
    }


def summarize_benchmark(rows: Sequence[Row]) -> dict[str, Any]:
    """One model on one benchmark: :func:`accuracy_over_samples` plus ``unreadable`` (answers with no single
    readable choice, of ``answers`` = n x K), ``format_compliance`` and ``per_subject`` (when rows have subjects).

    >>> rows = [{"item": 0, "sample": 0, "correct": True, "prediction": "A", "well_formed": True, "subject": "解剖"},
    ...         {"item": 1, "sample": 0, "correct": False, "prediction": None, "well_formed": False, "subject": "营养"}]
    >>> s = summarize_benchmark(rows)
    >>> s["n"], s["accuracy"], s["unreadable"], s["answers"], s["format_compliance"]
    (2, 0.5, 1, 2, 0.5)
    >>> {k: v["accuracy"] for k, v in s["per_subject"].items()}
    {'营养': 0.0, '解剖': 1.0}
    """
    summary = accuracy_over_samples(rows)
    summary["answers"] = len(rows)
    summary["unreadable"] = sum(r.get("prediction") is None for r in rows)
    summary["format_compliance"] = sum(bool(r["well_formed"]) for r in rows) / len(rows) if rows else None
    subjects: dict[str, list[Row]] = {}
    for row in rows:
        if row.get("subject"):
            subjects.setdefault(str(row["subject"]), []).append(row)
    summary["per_subject"] = {
        name: {k: v for k, v in accuracy_over_samples(group).items() if k != "sample_accuracies"}
        for name, group in sorted(subjects.items())
    }
    return summary


# ---- tables -------------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per (benchmark, model) from the summaries keyed by model (each with ``benchmarks``)."""
    rows = []
    benchmarks = list(dict.fromkeys(b for s in summaries.values() for b in s.get("benchmarks", {})))
    for bench in benchmarks:
        for model, summary in summaries.items():
            b = summary.get("benchmarks", {}).get(bench)
            if b is None:
                continue
            keep = ("n", "samples", "accuracy", "ci_low", "ci_high", "accuracy_sd", "accuracy_min", "accuracy_max")
            row = {"benchmark": bench, "model": model, **{k: b[k] for k in keep}}
            row |= {"unreadable": b["unreadable"], "answers": b["answers"]}
            rows.append(row)
    return rows


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The benchmark x model table: accuracy with its 95% Wilson interval, n, unreadable answers; with several
    samples also the standard deviation and range of the per-sample accuracies.

    >>> row = {"benchmark": "CMMLU", "model": "sft", "n": 10, "samples": 1, "accuracy": 0.5, "ci_low": 0.2366,
    ...        "ci_high": 0.7634, "accuracy_sd": None, "accuracy_min": 0.5, "accuracy_max": 0.5, "unreadable": 1,
    ...        "answers": 10}
    >>> print(results_table([row]).splitlines()[2])
    | CMMLU | sft | 10 | 50.0% [23.7%, 76.3%] | 1 (10.0%) |
    """
    several = any(r["samples"] > 1 for r in rows)
    header = ["benchmark", "model", "n", "accuracy [95% CI]"]
    header += ["sd over samples [min, max]"] if several else []
    header += ["unreadable"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---|" + ("---|" if several else "") + "---:|"]
    for r in rows:
        acc = f"{_pct(r['accuracy'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        cells = [r["benchmark"], r["model"], r["n"], acc]
        if several:
            sd = "n/a" if r["accuracy_sd"] is None else f"{100 * r['accuracy_sd']:.1f} pts"
            cells.append(f"{sd} [{_pct(r['accuracy_min'])}, {_pct(r['accuracy_max'])}] (K={r['samples']})")
        share = r["unreadable"] / r["answers"] if r["answers"] else None
        cells.append(f"{r['unreadable']} ({_pct(share)})")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def subject_table(bench: str, summaries: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Subject x model accuracy (``acc [95% CI] (n)``) for one benchmark; ``None`` when it has no subjects.

    >>> per = {"anatomy": {"n": 2, "accuracy": 0.5, "ci_low": 0.0945, "ci_high": 0.9055}}  # Wilson of 1 of 2
    >>> print(subject_table("CMMLU", {"base": {"benchmarks": {"CMMLU": {"per_subject": per}}}}).splitlines()[2])
    | anatomy | 50.0% [9.4%, 90.5%] (n=2) |
    """
    names = [m for m, s in summaries.items() if bench in s.get("benchmarks", {})]
    per_model = {m: summaries[m]["benchmarks"][bench].get("per_subject", {}) for m in names}
    subjects = sorted({subject for per in per_model.values() for subject in per})
    if not subjects:
        return None
    lines = ["| subject | " + " | ".join(_cell(n) for n in names) + " |", "|---|" + "---|" * len(names)]
    for subject in subjects:
        cells = []
        for name in names:
            s = per_model[name].get(subject)
            cells.append(
                f"{_pct(s['accuracy'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}] (n={s['n']})" if s else "n/a"
            )
        lines.append(f"| {_cell(subject)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
