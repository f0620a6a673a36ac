"""Multiple-choice exam layouts, one loader module each: our JSONL (ours), CMExam CSV (cmexam), CMB-Exam JSON (cmb),
MedQA-MCMLE JSONL (medqa), CMMLU CSV or folder (cmmlu). Here: the ``LAYOUTS`` registry, :func:`detect_layout` and
:func:`load_mcq`; ``base`` holds ``MCQItem`` and the checks."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from pathlib import Path

from medgspo.data.records import BUNDLED_MCQ, DataError, Problem
from medgspo.errors import ConfigError
from medgspo.eval.layouts import cmb, cmexam, cmmlu, medqa, ours
from medgspo.eval.layouts.base import MCQItem, MCQLoad, json_rows, normalize_answer, read_text

# A new layout is one module with ``NAME`` and ``load(path) -> MCQLoad``, one line here and, if its files can be
# told apart, a rule in detect_layout. Bad input raises DataError listing every problem as `file:line: field: msg`.
LAYOUTS: dict[str, Callable[[Path], MCQLoad]] = {
    ours.NAME: ours.load,
    cmexam.NAME: cmexam.load,
    cmb.NAME: cmb.load,
    medqa.NAME: medqa.load,
    cmmlu.NAME: cmmlu.load,
}
LAYOUT_CHOICES = ("auto", *LAYOUTS)


def _csv_header(path: Path) -> list[str]:
    first = read_text(path).splitlines()[0] if path.is_file() else ""
    return next(csv.reader(io.StringIO(first)), [])


def detect_layout(path: str | Path) -> str:
    """The layout of ``path``: a folder is CMMLU subject files; a ``.csv`` is CMMLU when its header has
    ``Question,A,B,C,D,Answer``, else CMExam; in ``.json``/``.jsonl`` the first record decides: ``answer_idx`` ->
    MedQA, ``option`` (and no ``options``) -> CMB, else ours."""
    path = Path(path)
    if path.is_dir():
        return cmmlu.NAME
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return cmmlu.NAME if path.is_file() and cmmlu.is_cmmlu_header(_csv_header(path)) else cmexam.NAME
    if suffix not in (".json", ".jsonl"):
        msg = "unsupported file type; use .jsonl, .json, .csv or a folder of CMMLU .csv files"
        raise DataError([Problem(str(path), None, "<path>", msg)])
    for _, obj, _ in json_rows(path, jsonl=suffix == ".jsonl"):
        if isinstance(obj, dict) and "answer_idx" in obj:
            return medqa.NAME
        return cmb.NAME if isinstance(obj, dict) and "option" in obj and "options" not in obj else ours.NAME
    return ours.NAME


def load_mcq(path: str | Path | None = None, layout: str = "auto", subjects: Iterable[str] | None = None) -> MCQLoad:
    """Single-answer items of ``path`` (``None``: the bundled ``data/mcq_zh.jsonl``) in ``layout`` or the detected
    one; ``subjects`` picks CMMLU subject files. :class:`~medgspo.errors.ConfigError` for an unknown layout."""
    if layout not in LAYOUT_CHOICES:
        raise ConfigError(f"--mcq_layout must be one of {', '.join(LAYOUT_CHOICES)} (got {layout!r})")
    path = Path(path or BUNDLED_MCQ)
    if not path.exists():
        raise DataError([Problem(str(path), None, "<path>", "no such file")])
    name = detect_layout(path) if layout == "auto" else layout
    if path.is_dir() and name != cmmlu.NAME:
        raise DataError([Problem(str(path), None, "<path>", f"a folder is read as CMMLU subject files, not {name}")])
    if name == cmmlu.NAME:
        return cmmlu.load(path, subjects)
    return LAYOUTS[name](path)


__all__ = [
    "LAYOUTS",
    "LAYOUT_CHOICES",
    "MCQItem",
    "MCQLoad",
    "detect_layout",
    "load_mcq",
    "normalize_answer",
]
