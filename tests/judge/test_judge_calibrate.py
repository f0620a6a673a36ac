"""``medgspo judge calibrate``: the agreement metrics worked by hand, the shipped labelled set, and the summary
recomputed from its own ``judgments.jsonl`` (on the reference judge and on a server whose verdicts we log)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer

from medgspo.cli import main
from medgspo.judge.calibration.metrics import (
    accuracy,
    cohen_kappa,
    confusion_matrix,
    coverage,
    decided_accuracy,
    per_tier,
    summarize,
    tier_value,
    verdict_change_rate,
)
from medgspo.judge.calibration.run import BUNDLED_CALIBRATION, read_labelled
from medgspo.judge.rubric.sanitize import clean

ORDER = [2.0, 0.5, 0.0, -0.5, -1.0]
KEYS = ["+2.0", "+0.5", "0.0", "-0.5", "-1.0"]


# ---- the metrics, worked by hand -----------------------------------------------------------------------------------
GOLD = [2.0, 2.0, 0.5, -0.5, -1.0, 0.0]
PRED = [2.0, 0.5, 0.5, None, -1.0, 2.0]


def test_accuracy_coverage_decided_accuracy() -> None:
    assert accuracy(GOLD, PRED) == pytest.approx(3 / 6)  # items 1, 3, 5 match; the abstention is a miss
    assert coverage(PRED) == pytest.approx(5 / 6)
    assert decided_accuracy(GOLD, PRED) == pytest.approx(3 / 5)
    assert decided_accuracy([2.0], [None]) is None


def test_kappa_by_hand() -> None:
    # Decided pairs (gold, judge): (A,A) (A,B) (B,B) (E,E) (C,A); n = 5, observed agreement po = 3/5.
    # Gold marginals A2 B1 C1 E1, judge marginals A2 B2 E1: pe = (2*2 + 1*2 + 1*0 + 1*1) / 25 = 7/25.
    # kappa = (3/5 - 7/25) / (1 - 7/25) = (8/25) / (18/25) = 4/9.
    assert cohen_kappa(GOLD, PRED) == pytest.approx(4 / 9)


def test_linear_weighted_kappa_by_hand() -> None:
    # Tier steps: A0 B1 C2 D3 E4, weight |i-j|/4. Observed disagreement: (A,B) 1/4 + (C,A) 2/4 = 3/4.
    # Expected: sum_ij w_ij * gold_i * judge_j / n with gold A2 B1 C1 E1 and judge A2 B2 E1, n = 5:
    #   A row: 2*(A2*0 + B2*1/4 + E1*4/4) = 2*(0.5 + 1) = 3
    #   B row: 1*(A2*1/4 + B2*0 + E1*3/4) = 0.5 + 0.75 = 1.25
    #   C row: 1*(A2*2/4 + B2*1/4 + E1*2/4) = 1 + 0.5 + 0.5 = 2
    #   E row: 1*(A2*4/4 + B2*3/4 + E1*0) = 2 + 1.5 = 3.5      total 9.75 / 5 = 1.95
    # weighted kappa = 1 - 0.75 / 1.95 = 1 - 5/13 = 8/13.
    assert cohen_kappa(GOLD, PRED, "linear") == pytest.approx(8 / 13)


def textbook_kappa(gold: list[float], pred: list[float | None]) -> float:
    """(po - pe) / (1 - pe) on the decided items, written independently of the module."""
    pairs = [(g, p) for g, p in zip(gold, pred, strict=True) if p is not None]
    n = len(pairs)
    po = sum(g == p for g, p in pairs) / n
    gold_counts, pred_counts = Counter(g for g, _ in pairs), Counter(p for _, p in pairs)
    pe = sum(gold_counts[t] * pred_counts[t] for t in ORDER) / n**2
    return (po - pe) / (1 - pe)


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_the_textbook_formula(seed: int) -> None:
    import random

    rng = random.Random(seed)
    gold = [rng.choice(ORDER) for _ in range(60)]
    pred = [g if rng.random() < 0.6 else rng.choice([*ORDER, None]) for g in gold]
    assert cohen_kappa(gold, pred) == pytest.approx(textbook_kappa(gold, pred))


def test_kappa_edge_cases() -> None:
    assert cohen_kappa([2.0, 0.5], [2.0, 0.5]) == pytest.approx(1.0)
    assert cohen_kappa([2.0, 2.0], [2.0, 2.0]) is None  # one category on both sides: undefined
    assert cohen_kappa([2.0], [None]) is None
    assert cohen_kappa([2.0, 0.5], [0.5, 2.0]) == pytest.approx(-1.0)


def test_confusion_matrix_and_per_tier() -> None:
    matrix = confusion_matrix(GOLD, PRED)
    assert matrix[0] == [1, 1, 0, 0, 0, 0]  # gold +2.0: one +2.0, one +0.5
    assert matrix[2] == [1, 0, 0, 0, 0, 0]  # gold 0.0 judged +2.0
    assert matrix[3] == [0, 0, 0, 0, 0, 1]  # gold -0.5: abstained
    assert sum(map(sum, matrix)) == len(GOLD)
    tiers = per_tier(GOLD, PRED)
    assert tiers["+2.0"] == {"gold": 2, "judged": 2, "correct": 1, "precision": 0.5, "recall": 0.5}
    assert tiers["-0.5"]["precision"] is None and tiers["-0.5"]["recall"] == 0.0
    assert summarize(GOLD, PRED)["precision_plus2"] == 0.5


def test_verdict_change_rate() -> None:
    assert verdict_change_rate([[2.0, 2.0, 2.0], [0.5, 0.5, -0.5], [None, None, None], [None, 0.5, 0.5]]) == 0.5
    assert verdict_change_rate([[2.0], [0.5]]) is None


def test_tier_value_accepts_values_keys_and_letters() -> None:
    assert [tier_value(x) for x in (2, "+2.0", "A", "-0.5", "e", 0)] == [2.0, 2.0, 2.0, -0.5, -1.0, 0.0]
    for bad in (1.0, "F", None, "good"):
        with pytest.raises(ValueError, match="label must be one of"):
            tier_value(bad)


# ---- the shipped labelled set --------------------------------------------------------------------------------------
def test_shipped_set_is_balanced_and_covers_the_bundled_specialties(bundled_records) -> None:
    rows = read_labelled(BUNDLED_CALIBRATION)
    assert len(rows) >= 100 and len({r["id"] for r in rows}) == len(rows)
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(ORDER) and min(counts.values()) >= 20
    specialties = {r["specialty"] for r in rows}
    assert specialties <= {r["specialty"] for r in bundled_records} and len(specialties) >= 12
    assert all(r["question"].strip() and r["reference"].strip() and isinstance(r["answer"], str) for r in rows)
    notes = " ".join(r["note"] for r in rows)
    for kind in ("abbreviation", "synonym", "incomplete", "contradiction", "off-topic", "fragment", "special-token"):
        assert kind in notes


# ---- the command ---------------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def recompute(rows: list[dict]) -> dict:
    """The summary's numbers from the per-item lines, computed here without the module under test."""
    n = len(rows)
    decided = [r for r in rows if r["score"] is not None]
    right = [r for r in decided if r["score"] == r["label"]]
    matrix = [[0] * 6 for _ in ORDER]
    for r in rows:
        matrix[ORDER.index(r["label"])][5 if r["score"] is None else ORDER.index(r["score"])] += 1
    plus2 = [r for r in decided if r["score"] == 2.0]
    tiers = [(k, v) for k, v in zip(KEYS, ORDER, strict=True) if any(r["label"] == v for r in rows)]
    return {
        "n": n,
        "n_decided": len(decided),
        "accuracy": len(right) / n,
        "coverage": len(decided) / n,
        "decided_accuracy": len(right) / len(decided) if decided else None,
        "matrix": matrix,
        "precision_plus2": sum(r["label"] == 2.0 for r in plus2) / len(plus2) if plus2 else None,
        "recall": {k: sum(r["label"] == v for r in right) / sum(r["label"] == v for r in rows) for k, v in tiers},
        "kappa": textbook_kappa([r["label"] for r in rows], [r["score"] for r in rows]) if len(decided) else None,
    }


def assert_summary_matches_its_judgments(out: Path) -> dict:
    summary = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    rows = read_jsonl(out / "judgments.jsonl")
    expected = recompute(rows)
    for key in ("n", "n_decided", "accuracy", "coverage", "decided_accuracy", "precision_plus2"):
        assert summary[key] == pytest.approx(expected[key]) if expected[key] is not None else summary[key] is None
    assert summary["confusion_matrix"]["matrix"] == expected["matrix"]
    assert {k: summary["per_tier"][k]["recall"] for k in expected["recall"]} == pytest.approx(expected["recall"])
    if summary["kappa"] is not None:
        assert summary["kappa"] == pytest.approx(expected["kappa"])
    assert all(r["correct"] == (r["score"] == r["label"]) for r in rows)
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return summary


def test_reference_judge_on_the_shipped_set(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal"
    argv = ["judge", "calibrate", "--input", str(BUNDLED_CALIBRATION), "--judge_backend", "reference"]
    assert main([*argv, "--output", str(out), "--no_progress"]) == 0
    summary = assert_summary_matches_its_judgments(out)
    # The figures docs/judge.md states: it decides 40 of 120 and every decision is right.
    assert (summary["n"], summary["n_decided"]) == (120, 40)
    assert summary["decided_accuracy"] == 1.0 and summary["accuracy"] == pytest.approx(40 / 120)
    assert summary["calls"] == 0 and summary["cost_usd"] == 0.0 and summary["judge"]["backend"] == "reference"
    assert summary["judge"]["rubric"].startswith("v2@")
    printed = capsys.readouterr().out
    assert "gold \\ judge" in printed and "coverage 0.333" in printed and f"output: {out}" in printed


def test_api_judge_with_repeats_against_a_server_whose_verdicts_we_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAL_KEY", "sk-calibrate-test-0123456789")
    rows = read_labelled(BUNDLED_CALIBRATION)[:30]
    letters = {2.0: "A", 0.5: "B", 0.0: "C", -0.5: "D", -1.0: "E"}
    gold = {r["answer"].strip(): letters[r["label"]] for r in rows}
    calls: Counter = Counter()
    logged: dict[str, list[str]] = {}

    def rule(question: str, reference: str, answer: str) -> str:
        """Right on most items, wrong on some, and changing its mind on every fifth answer's second call."""
        if not answer:  # the pre-flight request, not a judgment
            return "A"
        calls[answer] += 1
        label = gold.get(answer, "B")
        if len(answer) % 7 == 0:
            label = "A"
        if len(answer) % 5 == 0 and calls[answer] == 2:
            label = "D" if label != "D" else "B"
        logged.setdefault(answer, []).append(label)
        return label

    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "cal"
    with FakeOpenAIServer(rule=rule, model="deepseek-flash") as server:
        argv = ["judge", "calibrate", "--input", str(data), "--output", str(out), "--repeats", "3"]
        flags = ["--judge_backend", "openai", "--judge_base_url", server.base_url, "--judge_api_key_env", "CAL_KEY"]
        assert main([*argv, *flags, "--judge_cache", str(tmp_path / "c.sqlite"), "--no_progress"]) == 0
    summary = assert_summary_matches_its_judgments(out)
    judged = read_jsonl(out / "judgments.jsonl")
    values = {"A": 2.0, "B": 0.5, "C": 0.0, "D": -0.5, "E": -1.0}
    rule_scored = {r["answer"] for r in judged if r["judge_reason"] and r["judge_reason"].startswith("only special")}
    for row in judged:  # every score in the file is the verdict the server gave (or the -1.0 rule)
        shown = clean(row["answer"]).strip()  # the judge sees the width-folded text
        if shown in logged:
            assert row["scores"] == [values[x] for x in logged[shown]]
        else:
            assert row["answer"] in rule_scored or row["scores"] == [-1.0] * 3
    changed = sum(len(set(r["scores"])) > 1 for r in judged) / len(judged)
    assert summary["repeats"] == 3 and summary["verdict_change_rate"] == pytest.approx(changed) and changed > 0
    assert summary["calls"] == len(server.requests) == 3 * len(logged)  # repeats 2 and 3 bypass the cache
    assert summary["tokens"]["prompt"] > 0 and summary["cost_usd"] > 0
    assert summary["judge"]["model"] == "deepseek-flash" and "2026-11-29" in summary["price_note"]
    assert not math.isnan(summary["weighted_kappa"])


def test_bad_labelled_lines_are_listed_with_file_and_line(tmp_path: Path, capsys) -> None:
    good = {"question": "问？", "reference": "答。", "answer": "答。", "label": 2.0}
    lines = [good, {**good, "label": 1.0}, {**good, "answer": 3}, {k: v for k, v in good.items() if k != "label"}]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{oops\n", encoding="utf-8")
    assert main(["judge", "calibrate", "--input", str(path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    for where in ("set.jsonl:2: label", "set.jsonl:3: answer", "set.jsonl:4: label", "set.jsonl:5: (line)"):
        assert where in err
    assert not (tmp_path / "o").exists()


def test_empty_answers_are_accepted_and_scored_minus_one_by_rule(tmp_path: Path) -> None:
    good = {"question": "问？", "reference": "答。", "label": -1.0}
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps({**good, "answer": a}) + "\n" for a in ("", "  \n ")), encoding="utf-8")
    assert main(["judge", "calibrate", "--input", str(path), "--output", str(tmp_path / "o"), "--no_progress"]) == 0
    judged = read_jsonl(tmp_path / "o" / "judgments.jsonl")
    assert [(r["score"], r["judge_reason"]) for r in judged] == [(-1.0, "empty answer")] * 2


def test_repeats_must_be_positive(tmp_path: Path, capsys) -> None:
    assert main(["judge", "calibrate", "--output", str(tmp_path / "o"), "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_calibrate_help_and_the_plain_judge_command(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["judge", "calibrate", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "medgspo judge calibrate" in text and "--repeats" in text and "--judge_backend" in text
    with pytest.raises(SystemExit):
        main(["judge", "--help"])
    assert "judge calibrate" in capsys.readouterr().out
    out = tmp_path / "judged.jsonl"
    assert main(["judge", "--input", str(BUNDLED_CALIBRATION), "--output", str(out), "--no_progress"]) == 0
    assert len(read_jsonl(out)) == 120
