"""Multiple-choice metrics with hand-worked values: accuracy over samples, Wilson intervals, the tables."""

from __future__ import annotations

import math

import pytest

from medgspo.eval.mcq_metrics import (
    accuracy_over_samples,
    results_rows,
    results_table,
    subject_table,
    summarize_benchmark,
)
from medgspo.eval.metrics import wilson_interval


def _row(item, sample, correct, prediction="A", subject=None, well_formed=True):
    return {
        "item": item,
        "sample": sample,
        "correct": correct,
        "prediction": prediction,
        "subject": subject,
        "well_formed": well_formed,
    }


def test_one_sample_is_plain_accuracy_with_wilson():
    rows = [_row(0, 0, True), _row(1, 0, True), _row(2, 0, False, "C"), _row(3, 0, False, None, well_formed=False)]
    s = summarize_benchmark(rows)
    assert (s["n"], s["samples"], s["accuracy"], s["unreadable"], s["answers"]) == (4, 1, 0.5, 1, 4)
    assert (s["ci_low"], s["ci_high"]) == wilson_interval(2, 4)
    assert s["accuracy_sd"] is None and s["accuracy_min"] == s["accuracy_max"] == 0.5
    assert s["format_compliance"] == 0.75
    assert s["per_subject"] == {}


def test_several_samples_mean_spread_and_interval_over_questions():
    # 4 questions x 3 samples; per-sample accuracies 2/4, 3/4, 4/4 -> mean 0.75, sd = 0.25 (values 0.5, 0.75, 1.0)
    correct = {0: [True, True, False, False], 1: [True, True, True, False], 2: [True, True, True, True]}
    rows = [_row(i, k, c) for k, flags in correct.items() for i, c in enumerate(flags)]
    s = accuracy_over_samples(rows)
    assert (s["n"], s["samples"]) == (4, 3)
    assert s["sample_accuracies"] == [0.5, 0.75, 1.0]
    assert s["accuracy"] == pytest.approx(0.75) and s["accuracy_sd"] == pytest.approx(0.25)
    assert (s["accuracy_min"], s["accuracy_max"]) == (0.5, 1.0)
    # the interval is over the 4 questions at the mean rate (3 of 4), not over the 12 answers
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(3, 4))


def test_wilson_accepts_a_fractional_count():
    low, high = wilson_interval(2.5, 4)
    assert wilson_interval(2, 4)[0] < low < wilson_interval(3, 4)[0]
    assert wilson_interval(2, 4)[1] < high < wilson_interval(3, 4)[1]


def test_per_subject():
    rows = [
        _row(0, 0, True, subject="anatomy"),
        _row(1, 0, False, subject="anatomy"),
        _row(2, 0, True, subject="genetics"),
    ]
    per = summarize_benchmark(rows)["per_subject"]
    assert list(per) == ["anatomy", "genetics"]
    assert (per["anatomy"]["n"], per["anatomy"]["accuracy"], per["genetics"]["accuracy"]) == (2, 0.5, 1.0)


def test_results_table_benchmark_by_model():
    a = summarize_benchmark([_row(0, 0, True, subject="anatomy"), _row(1, 0, False, None, subject="virology")])
    b = summarize_benchmark([_row(0, 0, True), _row(1, 0, True)])
    summaries = {
        "base": {"benchmarks": {"CMMLU": a, "MedQA-MCMLE (5 options)": b}},
        "sft": {"benchmarks": {"CMMLU": b, "MedQA-MCMLE (5 options)": a}},
    }
    rows = results_rows(summaries)
    assert [(r["benchmark"], r["model"]) for r in rows] == [
        ("CMMLU", "base"),
        ("CMMLU", "sft"),
        ("MedQA-MCMLE (5 options)", "base"),
        ("MedQA-MCMLE (5 options)", "sft"),
    ]
    lines = results_table(rows).splitlines()
    assert lines[0] == "| benchmark | model | n | accuracy [95% CI] | unreadable |"
    # 1 of 2: Wilson (0.0945, 0.9055); 2 of 2: (0.3424, 1.0)
    assert lines[2] == "| CMMLU | base | 2 | 50.0% [9.5%, 90.5%] | 1 (50.0%) |"
    assert lines[3] == "| CMMLU | sft | 2 | 100.0% [34.2%, 100.0%] | 0 (0.0%) |"
    assert subject_table("CMMLU", summaries).splitlines() == [
        "| subject | base | sft |",
        "|---|---|---|",
        "| anatomy | 100.0% [20.7%, 100.0%] (n=1) | n/a |",
        "| virology | 0.0% [0.0%, 79.3%] (n=1) | n/a |",
    ]
    assert subject_table("MedQA-MCMLE (5 options)", {"sft": summaries["base"]}) is None


def test_results_table_with_samples_shows_the_spread():
    rows = [_row(0, k, c) for k, c in enumerate([True, False])]
    s = summarize_benchmark(rows)
    line = results_table(results_rows({"gspo": {"benchmarks": {"CMExam": s}}})).splitlines()
    assert "sd over samples [min, max]" in line[0]
    sd = 100 * math.sqrt(0.5)  # stdev of (1.0, 0.0)
    # one question right half the time: Wilson at k = 0.5, n = 1 is (0.0546, 0.9454)
    assert line[2] == f"| CMExam | gspo | 1 | 50.0% [5.5%, 94.5%] | {sd:.1f} pts [0.0%, 100.0%] (K=2) | 0 (0.0%) |"
