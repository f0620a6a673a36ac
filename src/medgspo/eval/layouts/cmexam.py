"""CMExam (williamliujl/CMExam): a CSV with one question per record and all options in one ``Options`` cell.

    medgspo eval --task mcq --data CMExam/test.csv --model Qwen/Qwen3.5-4B --adapter runs/gspo

The columns read, and a record in their shape (the ``Options`` cell holds one ``A 选项文本`` line per option, as
CMExam's own ``generate_prompt.py`` splits it; ``Answer`` is a letter or letters such as ``"ACD"``)::

    Question,Options,Answer,Explanation,Disease Group,Clinical Department,Medical Discipline
    有机磷中毒首选的解毒药是,"A 阿托品
    B 新斯的明
    C 碘解磷定
    D 地西泮
    E 甘露醇",A,阿托品能迅速缓解毒蕈碱样症状……,中毒,急诊科,临床医学

The subject is ``subject_column`` or the first of :data:`SUBJECT_COLUMNS` the header has. A record's line is the
physical line it starts on, so a problem in the record above is reported at line 2.
"""

from __future__ import annotations

import re
from pathlib import Path

from medgspo.data.records import Problem
from medgspo.eval.layouts.base import Checked, MCQLoad, csv_rows, finish, letter, make_item

NAME = "cmexam"
FIELDS = {"question": "Question", "options": "Options", "answer": "Answer"}
SUBJECT_COLUMNS = ("Clinical Department", "Disease Group", "Medical Discipline")

_OPTION_LINE = re.compile(r"^\s*([A-ZＡ-Ｚ])(?:\s*[.．、:：)）]\s*|\s+|(?=[^\x00-\x7f]))(.*)$")


def parse_option_lines(text: str) -> dict[str, str] | None:
    """The ``Options`` cell (``"A 选项文本\\nB ..."``) as a dict; a line without a letter continues the previous
    option. ``None`` when the first line has no letter or a letter repeats.

    >>> parse_option_lines("A 阿托品\\nB、新斯的明\\nC. 碘解磷定\\n（大剂量）")
    {'A': '阿托品', 'B': '新斯的明', 'C': '碘解磷定 （大剂量）'}
    """
    options: dict[str, str] = {}
    last = None
    for raw_line in text.splitlines():
        if not raw_line.strip():
            continue
        match = _OPTION_LINE.match(raw_line)
        if match:
            last = letter(match.group(1))
            if last in options:
                return None
            options[last] = match.group(2).strip()
        elif last is None:
            return None
        else:
            options[last] = f"{options[last]} {raw_line.strip()}".strip()
    return options or None


def load(path: str | Path, subject_column: str | None = None) -> MCQLoad:
    """The single-answer items of a CMExam CSV; ``subject_column`` picks the column read as the subject."""
    path, name = Path(path), str(Path(path))
    required = tuple(FIELDS.values()) + ((subject_column,) if subject_column else ())
    header, rows = csv_rows(path, required)
    subject_col = subject_column or next((c for c in SUBJECT_COLUMNS if c in header), None)
    results: list[Checked] = []
    for line, row in rows:
        options = parse_option_lines(row.get("Options") or "")
        if options is None:
            problem = Problem(name, line, "Options", "expected one option per line: 'A 选项文本' (letters unique)")
            results.append((None, False, [problem]))
            continue
        fields = {
            "question": row.get("Question"),
            "options": options,
            "answer": row.get("Answer"),
            "subject": row.get(subject_col) if subject_col else None,
            "explanation": row.get("Explanation"),
        }
        results.append(make_item(fields, FIELDS, name, line))
    return finish(name, NAME, results)
