"""Evaluation metrics with hand-worked values: bootstrap and Wilson intervals, the open-ended summary and table.

The multiple-choice ones are in test_mcq_metrics.py."""

from __future__ import annotations

import math

import pytest

from medgspo.eval.metrics import bootstrap_ci, markdown_table, summarize_open, wilson_interval
from medgspo.judge.rubric.tiers import TIER_KEYS, tier_key


# ---- bootstrap ----------------------------------------------------------------------------------------------------
def test_bootstrap_degenerate_inputs():
    low, high = bootstrap_ci([])
    assert math.isnan(low) and math.isnan(high)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci([-1.0] * 7) == (-1.0, -1.0)  # every resample mean is -1


def test_bootstrap_two_values():
    # Resample means of [0, 2]: 0 (p=1/4), 1 (p=1/2), 2 (p=1/4): both 2.5% tails sit inside the end buckets.
    assert bootstrap_ci([0.0, 2.0]) == (0.0, 2.0)


def test_bootstrap_four_values_hand_worked():
    # Values [0, 0, 0, 2]: a resample's mean is 0.5 * (number of 2s drawn), Binomial(4, 1/4):
    # P(mean <= 0) = 0.316, P(<= 0.5) = 0.738, P(<= 1.0) = 0.949, P(<= 1.5) = 0.996.
    # The 2.5% quantile is in the first bucket (0.0) and the 97.5% quantile in the 1.5 bucket.
    assert bootstrap_ci([0.0, 0.0, 0.0, 2.0]) == (0.0, 1.5)


def test_bootstrap_matches_normal_approximation():
    # 50 zeros and 50 ones: mean 0.5, standard error sqrt(0.25 / 100) = 0.05, so about 0.5 +- 1.96 * 0.05.
    low, high = bootstrap_ci([0.0, 1.0] * 50)
    assert low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)


def test_bootstrap_is_deterministic_and_alpha_narrows():
    values = [2.0, 0.5, -1.0, 0.5, 2.0, 0.0, -0.5, 2.0]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    low95, high95 = bootstrap_ci(values)
    low80, high80 = bootstrap_ci(values, alpha=0.2)
    mean = sum(values) / len(values)
    assert low95 <= low80 <= mean <= high80 <= high95


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.0}, {"n_boot": 0}])
def test_bootstrap_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], **kwargs)


# ---- Wilson -------------------------------------------------------------------------------------------------------
def test_wilson_hand_worked():
    # z = 1.96: 5/10 -> centre 0.5, half-width 1.96 * sqrt(0.025 + 0.009604) / 1.38416 = 0.2634.
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # 0/10 -> upper = 2 * 0.19208 / 1.38416 = 0.2775; 10/10 mirrors it.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    # alpha = 0.1 (z = 1.645): 5/10 -> half-width 1.645 * sqrt(0.025 + 0.006765) / 1.2706 = 0.2307.
    assert wilson_interval(5, 10, alpha=0.1) == pytest.approx((0.2693, 0.7307), abs=1e-3)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


# ---- open-ended summary -------------------------------------------------------------------------------------------
def _row(score, well_formed=True, thinking="想", answer="答", error=None):
    return {"well_formed": well_formed, "score": score, "thinking": thinking, "answer": answer, "error": error}


def test_tier_key():
    assert [tier_key(v) for v in (2.0, 0.5, 0.0, -0.5, -1.0)] == list(TIER_KEYS)
    assert tier_key(1.0) is None


def test_summarize_open_hand_worked():
    rows = [
        _row(2.0, thinking="一二三四", answer="肺炎"),  # think 4, answer 2
        _row(2.0, thinking="一二", answer="肺炎。"),  # 2, 3
        _row(-0.5, thinking="", answer="不是肺炎"),  # 0, 4
        _row(-1.0, well_formed=False, thinking="一二三四五六", answer=""),  # 6, 0
        _row(None, thinking="一二", answer="一", error="undecided: no lexical evidence"),  # 2, 1
        _row(None, thinking="一二", answer="一二", error="deadline exceeded"),  # 2, 2
    ]
    s = summarize_open(rows)
    assert s["n"] == 6
    assert s["format_compliance"] == pytest.approx(5 / 6)
    assert s["mean_score"] == pytest.approx((2.0 + 2.0 - 0.5 - 1.0) / 4)  # 0.625 over the 4 judged rows
    assert s["judged"] == 4 and s["judge_failures"] == 2 and s["judge_abstained"] == 1
    assert s["tier_counts"] == {"+2.0": 2, "+0.5": 0, "0.0": 0, "-0.5": 1, "-1.0": 1}
    assert s["mean_think_chars"] == pytest.approx((4 + 2 + 0 + 6 + 2 + 2) / 6)
    assert s["mean_answer_chars"] == pytest.approx((2 + 3 + 4 + 0 + 1 + 2) / 6)
    assert s["score_ci_low"] <= s["mean_score"] <= s["score_ci_high"]
    assert (s["score_ci_low"], s["score_ci_high"]) == bootstrap_ci([2.0, 2.0, -0.5, -1.0])


def test_summarize_open_empty_and_all_failed():
    empty = summarize_open([])
    assert empty["n"] == 0 and empty["format_compliance"] is None and empty["mean_score"] is None
    assert empty["score_ci_low"] is None and empty["mean_think_chars"] is None
    failed = summarize_open([_row(None, error="HTTP 503"), _row(None, error="HTTP 503")])
    assert failed["mean_score"] is None and failed["judge_failures"] == 2 and failed["judged"] == 0
    assert failed["tier_counts"] == dict.fromkeys(TIER_KEYS, 0)


def test_markdown_table_side_by_side():
    base = summarize_open([_row(-1.0, well_formed=False, answer=""), _row(0.5)])
    sft = summarize_open([_row(2.0), _row(None, error="undecided: x")])
    table = markdown_table({"base": base, "sft": sft}).splitlines()
    assert table[0].startswith("| model | n | format compliance | mean score [95% CI] | tiers +2.0 / +0.5")
    assert len(table) == 4
    assert table[2] == "| base | 2 | 50.0% | -0.25 [-1.00, 0.50] | 0 / 1 / 0 / 0 / 1 | 1 / 0 | 100.0% | 0 |"
    # the same answer to both questions: 1 distinct of 2 (how a collapsed policy shows)
    assert table[3] == "| sft | 2 | 100.0% | 2.00 [2.00, 2.00] | 1 / 0 / 0 / 0 / 0 | 1 / 1 | 50.0% | 1 (1 abstained) |"
    nothing = markdown_table({"x|y": summarize_open([_row(None, error="HTTP 500")])}).splitlines()[2]
    assert nothing.startswith("| x\\|y | 1 | 100.0% | n/a [n/a, n/a] |")
