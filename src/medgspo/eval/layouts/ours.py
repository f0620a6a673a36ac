"""Our multiple-choice layout (``medgspo``): JSONL, one question per line (a ``.json`` array works too).

    medgspo eval --task mcq                                   # the bundled data/mcq_zh.jsonl is in this layout
    medgspo eval --task mcq --data my_items.jsonl --mcq_layout medgspo

A row of the bundled ``data/mcq_zh.jsonl`` (``explanation`` shortened)::

    {"question": "急性下壁心肌梗死最常见的梗死相关动脉是（　）",
     "options": {"A": "左前降支", "B": "左主干", "C": "右冠状动脉", "D": "对角支", "E": "间隔支"},
     "answer": "C", "explanation": "多数人为右冠状动脉优势型，……", "subject": "cardiology"}

``question``, ``options`` and ``answer`` are required; ``explanation`` and ``subject`` are optional. Lines are the
file's physical lines.
"""

from __future__ import annotations

from pathlib import Path

from medgspo.eval.layouts.base import MCQLoad, check_json_rows, finish

NAME = "medgspo"
FIELDS = {"question": "question", "options": "options", "answer": "answer"}


def load(path: str | Path) -> MCQLoad:
    """The single-answer items of a file in our layout."""
    path = Path(path)
    results = check_json_rows(path, path.suffix.lower() != ".json", FIELDS, lambda obj: obj)
    return finish(str(path), NAME, results)
