"""Multiple choice: the strict answer extractor, the prompt, and our, CMExam and CMB layouts (good and bad files).

MedQA and CMMLU, detection and several benchmarks in one run: test_benchmarks.py; real answer styles:
test_extraction.py."""

from __future__ import annotations

import csv
import json

import pytest

from medgspo.data.chat_format import split_completion
from medgspo.data.records import DataError
from medgspo.eval.extraction import choice_from_completion, extract_choice
from medgspo.eval.layouts import LAYOUTS, MCQItem, detect_layout, load_mcq, normalize_answer
from medgspo.eval.layouts.cmexam import parse_option_lines
from medgspo.eval.mcq import build_prompt, score_choice
from medgspo.modeling.generation import Generation


# ---- extraction -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("答案是B", "B"),
        ("答案：B", "B"),
        ("答案为 B。", "B"),
        ("选B", "B"),
        ("应选B", "B"),
        ("故选 C。", "C"),
        ("选择D", "D"),
        ("正确选项为：B", "B"),
        ("正确答案是：**D. 间隔支**", "D"),
        ("B", "B"),
        ("B.", "B"),
        ("B、右冠状动脉", "B"),
        ("B 右冠状动脉", "B"),
        ("(B)", "B"),
        ("（B）", "B"),
        ("【B】", "B"),
        ("**B**", "B"),
        ("**B. 左主干**", "B"),
        ("Ｂ", "B"),  # full-width letter
        ("答案：Ｃ", "C"),
        ("The answer is B.", "B"),
        ("Answer: (E)", "E"),
        ("最终答案：\n\nA", "A"),
        ("根据分析，**E** 正确。", "E"),
    ],
)
def test_extract_single_commitment(text, expected):
    assert extract_choice(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "无法确定",
        "答案是B和C",  # the first commitment names two letters
        "答案：BC",
        "BC",
        "B和C",
        "答案：A，C。",
        "答案是B或C",
        "A、B",
        "答案是b",  # lowercase is not read
        "A patient with fever needs rest",  # a letter that starts an English sentence
        "ACEI类药物",  # capitals inside a word
        "答案是ACEI",
        "A项错误",  # an option echo, not a commitment
        "B 项错误",
        "不应选A",  # negated
        "答案不是A",
        "The answer is not A",
        "答案是F",  # not an option letter (A-E)
    ],
)
def test_extract_none(text):
    assert extract_choice(text) is None


def test_extract_first_commitment_wins_and_echoes_are_skipped():
    assert extract_choice("答案为B。再想想，答案是C") == "B"  # never "best of first and last"
    assert extract_choice("答案是B，C选项错误") == "B"  # a comma joins a letter only when it ends the phrase
    assert extract_choice("A项错误，B项错误，故选C") == "C"
    assert extract_choice("A、B、C均错误，故选D") == "D"
    assert extract_choice("选项B错误，答案为D") == "D"
    assert extract_choice("不选A，选B") == "B"
    assert extract_choice("首选X线检查，答案：C") == "C"  # X is not an option letter
    assert extract_choice("CT示肺炎，答案：A") == "A"


def test_extract_respects_letters():
    assert extract_choice("答案是E", letters="ABCD") is None
    assert extract_choice("答案是D", letters="ABCD") == "D"


def test_thinking_is_ignored():
    completion = "题目问梗死相关动脉，我先想答案是A，后来排除A。\n</think>\n\n答案：C"
    assert choice_from_completion(completion) == ("C", "答案：C", True)
    assert extract_choice(completion) == "C"  # the extractor itself reads only after </think>
    assert choice_from_completion("答案是A，还没想完") == (None, "", False)  # no </think>: no answer at all
    assert choice_from_completion("思考：选B\n</think>\n\n") == (None, "", False)


def test_normalize_answer():
    assert normalize_answer("Ｃ") == "C"
    assert normalize_answer("a, c") == "AC"
    assert normalize_answer("AAB") == "AB"
    assert normalize_answer("") is None and normalize_answer(3) is None and normalize_answer("A1") is None


def test_build_prompt_lists_options_and_asks_for_a_letter():
    prompt = build_prompt(MCQItem("下壁心梗的梗死相关动脉是（　）", {"A": "左前降支", "C": "右冠状动脉"}, "C"))
    assert "下壁心梗的梗死相关动脉是" in prompt
    assert "A. 左前降支\nC. 右冠状动脉" in prompt
    assert "答案：X" in prompt


def test_score_choices_reads_the_answer_only():
    items = [
        MCQItem("问一？", {"A": "甲", "B": "乙"}, "B"),
        MCQItem("问二？", {"A": "甲", "B": "乙"}, "A"),
        MCQItem("问三？", {"A": "甲", "B": "乙"}, "A"),
    ]
    texts = ["想：A？\n</think>\n\n答案：B", "答案是A，还没想完", "想\n</think>\n\n答案：E"]
    gens = [
        Generation(item.question, text, split_completion(text), 5) for item, text in zip(items, texts, strict=True)
    ]
    rows = [score_choice(item, gen) for item, gen in zip(items, gens, strict=True)]
    assert [(r["prediction"], r["correct"], r["well_formed"]) for r in rows] == [
        ("B", True, True),
        (None, False, False),  # no </think>: no answer, so no choice
        (None, False, True),  # E is not an option letter here
    ]
    assert rows[0]["gold"] == "B" and rows[0]["answer"] == "答案：B" and rows[0]["n_tokens"] == 5


# ---- our JSONL ----------------------------------------------------------------------------------------------------
OPTS = {"A": "左前降支", "B": "左主干", "C": "右冠状动脉", "D": "对角支", "E": "间隔支"}


def test_layout_registry():
    assert list(LAYOUTS) == ["medgspo", "cmexam", "cmb", "medqa", "cmmlu"]


def test_bundled_mcq_loads():
    loaded = load_mcq()
    assert loaded.layout == "medgspo" and len(loaded.items) == 112 and loaded.skipped_multi == 0
    assert all(item.answer in item.options and item.subject for item in loaded.items)


def test_medgspo_jsonl_skips_multi_answer(write_jsonl):
    path = write_jsonl(
        [
            {"question": "问题一？", "options": OPTS, "answer": "C", "subject": "心内科", "explanation": "解析"},
            {"question": "问题二？", "options": OPTS, "answer": "ACD"},
            {"question": "问题三？", "options": {**OPTS, "E": ""}, "answer": "ｂ"},  # blank option dropped
        ]
    )
    loaded = load_mcq(path)
    assert loaded.skipped_multi == 1 and [i.answer for i in loaded.items] == ["C", "B"]
    first, third = loaded.items
    assert (first.subject, first.explanation, first.line) == ("心内科", "解析", 1)
    assert third.letters == "ABCD" and third.line == 3


def test_medgspo_jsonl_problems_name_file_line_and_field(write_jsonl):
    path = write_jsonl(
        [
            {"question": "好的？", "options": OPTS, "answer": "A"},
            {"question": "", "options": OPTS, "answer": "A"},
            {"question": "无选项？", "answer": "A"},
            {"question": "答案不在选项中？", "options": {"A": "甲", "B": "乙"}, "answer": "E"},
            "{not json",
            {"question": "坏键？", "options": {"AB": "甲", "C": "乙"}, "answer": "C"},
        ]
    )
    with pytest.raises(DataError) as info:
        load_mcq(path)
    text = str(info.value)
    assert f"{path}:2: question: missing or empty" in text
    assert f"{path}:3: options: expected an object" in text
    assert f"{path}:4: answer: 'E' is not among the options AB" in text
    assert f"{path}:5: <json>: invalid JSON" in text
    assert f"{path}:6: options: option key 'AB' is not a single letter" in text
    assert len(info.value.problems) == 5


def test_only_multi_answer_items_is_an_error(write_jsonl):
    with pytest.raises(DataError, match="no single-answer items"):
        load_mcq(write_jsonl([{"question": "多选？", "options": OPTS, "answer": "AB"}]))


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_mcq(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty file"):
        load_mcq(tmp_path / "empty.jsonl")
    (tmp_path / "items.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        load_mcq(tmp_path / "items.txt")
    with pytest.raises(ValueError, match="layout"):
        load_mcq(tmp_path / "empty.jsonl", layout="xml")


# ---- CMExam CSV ---------------------------------------------------------------------------------------------------
def _write_csv(path, header, rows):
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CMEXAM_HEADER = ["Question", "Options", "Answer", "Explanation", "Disease Group", "Clinical Department"]


def test_cmexam_csv(tmp_path):
    path = _write_csv(
        tmp_path / "cmexam.csv",
        CMEXAM_HEADER,
        [
            [
                "有机磷中毒首选的解毒药是",
                "A 阿托品\nB 新斯的明\nC 碘解磷定\nD 地西泮\nE 甘露醇",
                "A",
                "解析",
                "中毒",
                "急诊科",
            ],
            ["多选题", "A 甲\nB 乙\nC 丙", "AB", "", "", ""],
            ["第三题", "A．甲\nB、乙\nC:丙", "C", "", "呼吸", ""],
        ],
    )
    loaded = load_mcq(path)
    assert loaded.layout == "cmexam" and loaded.skipped_multi == 1
    first, third = loaded.items
    assert first.options == {"A": "阿托品", "B": "新斯的明", "C": "碘解磷定", "D": "地西泮", "E": "甘露醇"}
    assert (first.answer, first.subject, first.line) == ("A", "急诊科", 2)
    assert third.options == {"A": "甲", "B": "乙", "C": "丙"}
    assert third.subject is None and third.line == 10  # row 1 spans lines 2-6, row 2 lines 7-9
    assert load_mcq(path, layout="cmexam").items == loaded.items
    from medgspo.eval.layouts import cmexam

    assert cmexam.load(path, subject_column="Disease Group").items[1].subject == "呼吸"


def test_cmexam_bad_files(tmp_path):
    missing = _write_csv(tmp_path / "missing.csv", ["Question", "Answer"], [["问？", "A"]])
    with pytest.raises(DataError, match=r"missing\.csv:1: <header>: missing column\(s\) Options"):
        load_mcq(missing)
    bad = _write_csv(
        tmp_path / "bad.csv",
        CMEXAM_HEADER,
        [
            ["好题", "A 甲\nB 乙", "A", "", "", ""],
            ["坏选项", "甲乙丙", "A", "", "", ""],
            ["坏答案", "A 甲\nB 乙", "是A", "", "", ""],
        ],
    )
    with pytest.raises(DataError) as info:
        load_mcq(bad)
    text = str(info.value)
    assert f"{bad}:4: Options: expected one option per line" in text
    assert f"{bad}:5: Answer: expected option letter(s), got '是A'" in text


def test_parse_option_lines():
    assert parse_option_lines("A 甲\n（续）\nB 乙") == {"A": "甲 （续）", "B": "乙"}
    assert parse_option_lines("甲\nA 乙") is None
    assert parse_option_lines("A 甲\nA 乙") is None


# ---- CMB-Exam JSON ------------------------------------------------------------------------------------------------
def test_cmb_json(tmp_path):
    items = [
        {
            "exam_type": "医师考试",
            "exam_class": "执业医师",
            "exam_subject": "临床执业医师",
            "question": "问一？",
            "answer": "D",
            "question_type": "单项选择题",
            "option": {"A": "甲", "B": "乙", "C": "丙", "D": "丁", "E": ""},
        },
        {
            "exam_type": "医师考试",
            "exam_class": "执业医师",
            "exam_subject": "",
            "question": "问二？",
            "answer": "ABC",
            "question_type": "多项选择题",
            "option": {"A": "甲", "B": "乙", "C": "丙", "D": "丁"},
        },
        {"exam_type": "护理考试", "question": "问三？", "answer": "A", "option": {"A": "甲", "B": "乙"}},
    ]
    path = tmp_path / "cmb.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    assert detect_layout(path) == "cmb"
    loaded = load_mcq(path)
    assert loaded.layout == "cmb" and loaded.skipped_multi == 1
    assert [(i.answer, i.subject, i.letters) for i in loaded.items] == [
        ("D", "临床执业医师", "ABCD"),
        ("A", "护理考试", "AB"),
    ]


def test_cmb_bad_items_name_line_and_field(tmp_path):
    items = [
        {"question": "好？", "answer": "A", "option": {"A": "甲", "B": "乙"}},
        {"question": "没答案？", "answer": "", "option": {"A": "甲", "B": "乙"}},
        {"question": "选项是列表？", "answer": "A", "option": ["甲", "乙"]},
    ]
    path = tmp_path / "cmb.json"
    path.write_text("[\n" + ",\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n]\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_mcq(path)
    text = str(info.value)
    assert f"{path}:3: answer: expected option letter(s), got ''" in text
    assert f"{path}:4: option: expected an object of letter -> text, got list" in text
    (tmp_path / "broken.json").write_text('[{"question": "x", "option": ', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        load_mcq(tmp_path / "broken.json", layout="cmb")
