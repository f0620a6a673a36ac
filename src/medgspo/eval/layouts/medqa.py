"""MedQA, mainland China (MCMLE; jind11/MedQA): JSONL, one question per line, graded by ``answer_idx``.

    medgspo eval --task mcq --data MedQA/data_clean/questions/Mainland/test.jsonl            # 5 options (A-E)
    medgspo eval --task mcq --data MedQA/data_clean/questions/Mainland/4_options/test.jsonl  # 4 options (A-D)

A real row of ``Mainland/test.jsonl`` (from the MedQA README) and one of ``Mainland/4_options/test.jsonl``::

    {"question": "卧位腰椎穿刺，脑脊液压力正常值是（　　）。",
     "options": {"A": "190～220mmH2O（1.86～2.16kPa）", "B": "80～180mmH2O（0.78～1.76kPa）",
                 "C": "50～70mmH2O（0.49～0.69kPa）", "D": "230～250mmH2O（2.25～2.45kPa）",
                 "E": "260～280mmH2O（2.55～2.74kPa）"},
     "answer": "80～180mmH2O（0.78～1.76kPa）", "meta_info": "第三部分　精神神经系统疾病", "answer_idx": "B"}
    {"question": "经调查证实出现医院感染流行时，医院应报告当地卫生行政部门的时间是（　　）。",
     "options": {"A": "2小时", "B": "4小时内", "C": "12小时内", "D": "24小时内"},
     "answer": "24小时内", "meta_info": "卫生法规", "answer_idx": "D"}

``answer`` is the option's *text*; the key graded against is the letter ``answer_idx`` (the 4-option files are
re-lettered, so only the letter is safe). Each row's ``options[answer_idx]`` is compared with ``answer``
(NFKC-normalised, whitespace ignored); rows where they disagree are still graded by the letter and listed in
:attr:`~medgspo.eval.layouts.base.MCQLoad.mismatches`, which the report shows. ``meta_info`` is the subject.
Lines are the file's physical lines.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

from medgspo.data.records import Problem
from medgspo.eval.layouts.base import MCQLoad, check_json_rows, finish, json_rows, letter

logger = logging.getLogger(__name__)

NAME = "medqa"
FIELDS = {"question": "question", "options": "options", "answer": "answer_idx"}


def to_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A MedQA row mapped onto the common fields (the key is ``answer_idx``, the subject ``meta_info``).

    >>> to_fields({"question": "问？", "options": {"A": "甲", "B": "乙"}, "answer": "乙", "answer_idx": "B",
    ...            "meta_info": "卫生法规"})
    {'question': '问？', 'options': {'A': '甲', 'B': '乙'}, 'answer': 'B', 'subject': '卫生法规', 'explanation': None}
    """
    return {
        "question": obj.get("question"),
        "options": obj.get("options"),
        "answer": obj.get("answer_idx"),
        "subject": obj.get("meta_info"),
        "explanation": None,
    }


def _same_text(a: str, b: str) -> bool:
    """Equal after NFKC and with whitespace removed (``"24小时内"`` == ``" 24 小时内"``)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", a)) == re.sub(r"\s+", "", unicodedata.normalize("NFKC", b))


def key_mismatch(obj: dict[str, Any], path: str, line: int) -> Problem | None:
    """A :class:`Problem` when ``options[answer_idx]`` is not ``answer``; ``None`` when they agree or either is
    unusable (a broken ``answer_idx`` or ``options`` is reported by the row checks instead).

    >>> row = {"options": {"A": "2小时", "D": "24小时内"}, "answer": "2小时", "answer_idx": "D"}
    >>> print(key_mismatch(row, "test.jsonl", 7))
    test.jsonl:7: answer: options['D'] is '24小时内' but answer is '2小时' (graded by answer_idx D)
    >>> key_mismatch({**row, "answer": "24小时内"}, "test.jsonl", 7) is None
    True
    """
    options, idx, answer = obj.get("options"), obj.get("answer_idx"), obj.get("answer")
    if not isinstance(options, dict) or not isinstance(idx, str) or "answer" not in obj:
        return None
    texts = {letter(str(k)): v for k, v in options.items()}
    key = letter(idx)
    if key not in texts:
        return None
    option = texts[key]
    if isinstance(answer, str) and isinstance(option, str) and _same_text(option, answer):
        return None
    message = f"options[{key!r}] is {option!r} but answer is {answer!r} (graded by answer_idx {key})"
    return Problem(path, line, "answer", message)


def load(path: str | Path) -> MCQLoad:
    """The single-answer items of a MedQA ``.jsonl`` file (5 or 4 options), with its key mismatches."""
    path = Path(path)
    jsonl = path.suffix.lower() != ".json"
    loaded = finish(str(path), NAME, check_json_rows(path, jsonl, FIELDS, to_fields))
    for line, obj, problem in json_rows(path, jsonl):
        mismatch = key_mismatch(obj, str(path), line) if problem is None and isinstance(obj, dict) else None
        if mismatch is not None:
            loaded.mismatches.append(mismatch)
    if loaded.mismatches:
        logger.warning(
            "%s: %d row(s) where options[answer_idx] != answer, graded by answer_idx; first: %s",
            path,
            len(loaded.mismatches),
            loaded.mismatches[0],
        )
    return loaded
