"""What every exam layout shares: the :class:`MCQItem` it yields and the checks that turn a decoded row into one.

A layout module (:mod:`.ours`, :mod:`.cmexam`, :mod:`.cmb`, :mod:`.medqa`, :mod:`.cmmlu`) reads its file, maps each row onto the common fields
``question``, ``options`` (letter -> text), ``answer`` and optionally ``subject``/``explanation``, and hands it to
:func:`make_item`; :func:`finish` gathers the results. Every problem is a
:class:`~medgspo.data.records.Problem` (``file:line: field: what is wrong``) and a file with any problem raises
:class:`~medgspo.data.records.DataError` listing all of them. Pure except :func:`read_text` and the readers built
on it (:func:`json_rows`, :func:`csv_rows`).
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.data.records import DataError, Problem, decode_text, iter_json, iter_jsonl

logger = logging.getLogger(__name__)


@dataclass
class MCQItem:
    """One single-answer multiple-choice question and where it came from."""

    question: str
    options: dict[str, str]
    answer: str
    subject: str | None = None
    explanation: str | None = None
    source: str = ""
    line: int | None = None

    @property
    def letters(self) -> str:
        """The option letters in order, e.g. ``"ABCDE"``."""
        return "".join(self.options)


@dataclass
class MCQLoad:
    """What a loader read: the single-answer items, how many multi-answer items it skipped, and rows whose key
    disagrees with itself (MedQA: ``options[answer_idx] != answer``; graded by the letter, reported here)."""

    items: list[MCQItem] = field(default_factory=list)
    skipped_multi: int = 0
    layout: str = ""
    source: str = ""
    mismatches: list[Problem] = field(default_factory=list)


# What make_item returns for one row: the item (valid and single-answer), whether it was multi-answer, problems.
Checked = tuple[MCQItem | None, bool, list[Problem]]


def letter(text: str) -> str:
    """A key or label as one upper-case ASCII letter candidate (full-width letters normalised).

    >>> letter(" ｂ ")
    'B'
    """
    return unicodedata.normalize("NFKC", text).strip().upper()


def normalize_answer(raw: Any) -> str | None:
    """The answer letters of a gold label (``"B"``, ``"ａ"``, ``"A,C"``, ``"ACD"``), or ``None`` if not letters.

    >>> normalize_answer(" Ｂ "), normalize_answer("A、C"), normalize_answer("C是对的")
    ('B', 'AC', None)
    """
    if not isinstance(raw, str):
        return None
    letters = re.sub(r"[\s,，、;；/]+", "", unicodedata.normalize("NFKC", raw)).upper()
    if not letters or not re.fullmatch(r"[A-Z]+", letters):
        return None
    return "".join(dict.fromkeys(letters))


def text_or_none(value: Any) -> str | None:
    """A stripped non-empty string, else ``None``.

    >>> text_or_none("  心内科 "), text_or_none(""), text_or_none(3)
    ('心内科', None, None)
    """
    return value.strip() if isinstance(value, str) and value.strip() else None


def check_options(options: Any, name: str, path: str, line: int | None) -> tuple[dict[str, str], list[Problem]]:
    """Options as ``{letter: text}`` sorted by letter; empty texts are dropped (some exams pad to five options).

    >>> check_options({"b": "乙", "A": "甲", "C": ""}, "options", "f.jsonl", 1)
    ({'A': '甲', 'B': '乙'}, [])
    """
    if not isinstance(options, dict):
        return {}, [Problem(path, line, name, f"expected an object of letter -> text, got {type(options).__name__}")]
    clean, problems = {}, []
    for key, text in options.items():
        key_letter = letter(str(key))
        if not re.fullmatch(r"[A-Z]", key_letter):
            problems.append(Problem(path, line, name, f"option key {key!r} is not a single letter A-Z"))
        elif not isinstance(text, (str, int, float)) or isinstance(text, bool):
            problems.append(
                Problem(path, line, name, f"option {key_letter}: expected text, got {type(text).__name__}")
            )
        elif key_letter in clean:
            problems.append(Problem(path, line, name, f"option {key_letter} appears twice"))
        elif str(text).strip():
            clean[key_letter] = str(text).strip()
    if not problems and len(clean) < 2:
        problems.append(Problem(path, line, name, f"needs at least 2 non-empty options, got {len(clean)}"))
    return dict(sorted(clean.items())), problems


def make_item(raw: dict[str, Any], names: dict[str, str], path: str, line: int | None) -> Checked:
    """Validate one row already mapped to ``question``, ``options`` (a dict), ``answer`` and optionally
    ``subject``/``explanation``; ``names`` maps those to the layout's own field names for error messages.

    Returns ``(item, is_multi_answer, problems)``: an item only when the row is valid and single-answer.

    >>> names = {"question": "question", "options": "options", "answer": "answer"}
    >>> item, multi, problems = make_item({"question": "问？", "options": {"A": "甲", "B": "乙"}, "answer": "ｂ"},
    ...                                   names, "f.jsonl", 3)
    >>> item.answer, item.letters, multi, problems
    ('B', 'AB', False, [])
    >>> make_item({"question": "问？", "options": {"A": "甲", "B": "乙"}, "answer": "AB"}, names, "f.jsonl", 4)
    (None, True, [])
    """
    problems = []
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(Problem(path, line, names["question"], "missing or empty"))
    options, option_problems = check_options(raw.get("options"), names["options"], path, line)
    problems += option_problems
    answer = normalize_answer(raw.get("answer"))
    if answer is None:
        problems.append(Problem(path, line, names["answer"], f"expected option letter(s), got {raw.get('answer')!r}"))
    elif options and any(a not in options for a in answer):
        problems.append(
            Problem(path, line, names["answer"], f"{answer!r} is not among the options {''.join(options)}")
        )
    if problems:
        return None, False, problems
    if len(answer) > 1:
        return None, True, []
    subject, explanation = text_or_none(raw.get("subject")), text_or_none(raw.get("explanation"))
    return MCQItem(question.strip(), options, answer, subject, explanation, path, line), False, []


def finish(path: str, layout: str, results: list[Checked]) -> MCQLoad:
    """The :class:`MCQLoad` of a file's checked rows; :class:`DataError` listing every problem, or when no
    single-answer item is left."""
    problems = [p for _, _, found in results for p in found]
    if problems:
        raise DataError(problems)
    items = [item for item, _, _ in results if item is not None]
    load = MCQLoad(items, sum(multi for _, multi, _ in results), layout, path)
    if not load.items:
        raise DataError([Problem(path, None, "<file>", f"no single-answer items ({load.skipped_multi} multi-answer)")])
    if load.skipped_multi:
        logger.info("Skipped %d multi-answer item(s) in %s.", load.skipped_multi, path)
    return load


def read_text(path: Path) -> str:
    """The file's text (UTF-8, BOM accepted); :class:`DataError` for a missing, empty, binary or non-UTF-8 file."""
    if not path.is_file():
        raise DataError([Problem(str(path), None, "<path>", "no such file")])
    text, problems = decode_text(path.read_bytes(), str(path))
    if text is None:
        raise DataError(problems)
    return text


def json_rows(path: Path, jsonl: bool) -> list[tuple[int, Any, Problem | None]]:
    """``(line, object, problem)`` for each record of a JSONL file (``jsonl``) or a JSON array."""
    text = read_text(path)
    return list(iter_jsonl(text, str(path)) if jsonl else iter_json(text, str(path)))


def check_json_rows(path: Path, jsonl: bool, names: dict[str, str], to_fields: Any) -> list[Checked]:
    """Check every record of a JSON(L) file: ``to_fields(obj)`` maps a record onto the common fields."""
    results: list[Checked] = []
    for line, obj, problem in json_rows(path, jsonl):
        if problem is not None:
            results.append((None, False, [problem]))
        elif not isinstance(obj, dict):
            results.append((None, False, [Problem(str(path), line, "<record>", "expected a JSON object")]))
        else:
            results.append(make_item(to_fields(obj), names, str(path), line))
    return results


def csv_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line, row)`` of each record of a CSV file (``line``: the physical line the record starts
    on; a quoted cell may span lines). :class:`DataError` when a ``required`` column is missing or the CSV breaks."""
    name = str(path)
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        raise DataError([Problem(name, 1, "<csv>", f"unreadable header: {err}")]) from None
    missing = [c for c in required if c not in header]
    if missing:
        shown = ",".join(header) or "nothing"
        raise DataError(
            [Problem(name, 1, "<header>", f"missing column(s) {', '.join(missing)}; the header is {shown}")]
        )
    rows = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError([Problem(name, reader.line_num, "<csv>", str(err))]) from None
        rows.append((start, row))
        start = reader.line_num + 1
    return header, rows
