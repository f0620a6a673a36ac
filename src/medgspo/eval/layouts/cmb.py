"""CMB-Exam (FreedomIntelligence/CMB): a JSON array of questions, ``option`` (singular) mapping letters to text.

    medgspo eval --task mcq --data CMB-Exam/CMB-val/CMB-val-merge.json --model Qwen/Qwen3.5-4B

An item as the CMB README shows it (``question`` shortened)::

    {"exam_type": "医师考试", "exam_class": "执业医师", "exam_subject": "口腔执业医师",
     "question": "患者，男性，11岁。近2个月来时有低热（37～38℃），……此男孩可能患",
     "answer": "D", "question_type": "单项选择题",
     "option": {"A": "小叶型肺炎", "B": "浸润性肺结核", "C": "继发性肺结核", "D": "原发性肺结核", "E": "粟粒型肺结核"}}

The subject is the first non-empty of ``exam_subject``, ``exam_class``, ``exam_type``; multi-answer items
(``多项选择题``, ``answer`` such as ``"ABD"``) are skipped and counted. Lines are where each element starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medgspo.eval.layouts.base import MCQLoad, check_json_rows, finish, text_or_none

NAME = "cmb"
FIELDS = {"question": "question", "options": "option", "answer": "answer"}
SUBJECT_FIELDS = ("exam_subject", "exam_class", "exam_type")


def to_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A CMB item mapped onto the common fields.

    >>> to_fields({"question": "问？", "option": {"A": "甲"}, "answer": "A", "exam_subject": "", "exam_type": "护理考试"})
    {'question': '问？', 'options': {'A': '甲'}, 'answer': 'A', 'subject': '护理考试', 'explanation': None}
    """
    subject = next((obj[k] for k in SUBJECT_FIELDS if text_or_none(obj.get(k))), None)
    return {
        "question": obj.get("question"),
        "options": obj.get("option"),
        "answer": obj.get("answer"),
        "subject": subject,
        "explanation": obj.get("explanation"),
    }


def load(path: str | Path) -> MCQLoad:
    """The single-answer items of a CMB-Exam ``.json`` array (or ``.jsonl``)."""
    path = Path(path)
    return finish(str(path), NAME, check_json_rows(path, path.suffix.lower() == ".jsonl", FIELDS, to_fields))
