"""The answer-letter rule on real answer styles: every case of data/answer_cases.jsonl and every example of the
extraction table in docs/evaluation.md is a test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medgspo.eval.extraction import choice_from_completion, extract_choice, final_answer

HERE = Path(__file__).resolve().parent
CASES = [json.loads(line) for line in (HERE / "data" / "answer_cases.jsonl").read_text(encoding="utf-8").splitlines()]
DOCS = HERE.parents[1] / "docs" / "evaluation.md"


def docs_examples() -> list[tuple[str, str | None, str]]:
    """``(text, letter or None, letters)`` of each row of the table under "### Examples" in docs/evaluation.md."""
    section = DOCS.read_text(encoding="utf-8").split("### Examples", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"^\| `(?P<text>[^`]*)`(?P<note>[^|]*)\| (?P<read>[A-E]|unread) \|", line)
        if match:
            letters = "ABCD" if "options A-D" in match["note"] else "ABCDE"
            rows.append((match["text"], None if match["read"] == "unread" else match["read"], letters))
    return rows


def test_case_files_are_what_the_tests_expect():
    assert len(CASES) == 124 and all(set(c) == {"text", "expected", "style"} for c in CASES)
    assert sum(c["expected"] is None for c in CASES) > 40  # the strict side is tested as hard as the reading side


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['style']}" for i, c in enumerate(CASES)])
def test_answer_case(case):
    assert extract_choice(case["text"]) == case["expected"]


@pytest.mark.parametrize(("text", "expected", "letters"), docs_examples())
def test_docs_example(text, expected, letters):
    assert extract_choice(text, letters) == expected


def test_docs_table_is_found_and_covers_the_issue():
    texts = {text for text, _, _ in docs_examples()}
    assert len(texts) >= 25
    must = [
        "\\boxed{C}",
        "答案：$\\boxed{E}$",
        "【答案】C",
        "答：B",
        "正确的是B",
        "选项D是正确的",
        "D选项正确",
        "答案：Ｃ",
    ]
    must += ["A项错误", "不选A", "ACEI", "应行CT检查", "X线片示肺炎", "B、C", "无法确定，需要更多信息"]
    assert set(must) <= texts


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("我先想：答案是A。\n</think>\n\n\\boxed{C}", "C"),  # the thinking's "答案是A" never counts
        ("答案是A。\n</think>\n\n无法确定", None),
        ("<think>\n答案是A，还在想", None),  # unclosed thinking: no answer
        ("想\n</think>\n想错了\n</think>\n\n【答案】D", "D"),  # after the last </think>
    ],
)
def test_only_the_text_after_think_is_read(completion, expected):
    assert extract_choice(completion) == expected


def test_final_answer_and_completion_split():
    assert final_answer("<think>\n还在想") is None and final_answer("答案：B") == "答案：B"
    assert choice_from_completion("想。\n</think>\n\n答：E") == ("E", "答：E", True)
    assert choice_from_completion("答：E") == (None, "", False)  # a completion with no </think> is all thinking


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{\\mathrm{E}}", "E"),
        ("答案：\\boxed{\\textbf{B}}", "B"),
        ("\\boxed{(C)}", "C"),
        ("\\boxed{C. 右冠状动脉}", "C"),
        ("\\boxed{BC}", None),
        ("【答案】D\n【解析】本题考查急性心肌梗死的定位诊断。", "D"),
        ("答案：Ｄ．肾病综合征", "D"),
        ("最可能是C", "C"),
        ("也可能是B", None),
        ("答案可能是A", None),
        ("选项B错误，答案为D", "D"),
        ("选项A和C都对", None),
        ("C选项看似合理，但患者无发热。\nE选项与症状最为吻合。\n最终答案：E", "E"),
        ("首选B超检查", None),
        ("维生素B12缺乏", None),
        ("大肠埃希菌（E. coli）", None),
        ("B项也不完全正确", None),
        ("The correct answer is D", "D"),
        ("A项正确，B项正确，C项错误。故选C。", "C"),  # verdicts on several options are an analysis
        ("A正确，B错误，故选B", "B"),
        ("D选项正确，其余选项均错误", "D"),
    ],
)
def test_more_real_styles(text, expected):
    assert extract_choice(text) == expected
