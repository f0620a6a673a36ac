"""Multiple-choice exam layouts, one loader module each: our JSONL (ours), CMExam CSV (cmexam), CMB-Exam JSON (cmb).
Here: the ``LAYOUTS`` registry, :func:`detect_layout` and :func:`load_mcq`; ``base`` holds ``MCQItem`` and the checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medgspo.data.records import BUNDLED_MCQ, DataError, Problem
from medgspo.errors import ConfigError
from medgspo.eval.layouts import cmb, cmexam, ours
from medgspo.eval.layouts.base import MCQItem, MCQLoad, json_rows, normalize_answer

# A new layout is one module with ``NAME`` and ``load(path) -> MCQLoad``, one line here and, if its files can be
# told apart, a rule in detect_layout. Bad input raises DataError listing every problem as `file:line: field: msg`.
LAYOUTS: dict[str, Callable[[Path], MCQLoad]] = {ours.NAME: ours.load, cmexam.NAME: cmexam.load, cmb.NAME: cmb.load}
LAYOUT_CHOICES = ("auto", *LAYOUTS)


def detect_layout(path: str | Path) -> str:
    """``cmexam`` for ``.csv``; for ``.json``/``.jsonl``, ``cmb`` when the first record has ``option`` (and no
    ``options``), else ``medgspo``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return cmexam.NAME
    if suffix not in (".json", ".jsonl"):
        raise DataError([Problem(str(path), None, "<path>", "unsupported file type; use .jsonl, .json or .csv")])
    for _, obj, _ in json_rows(path, jsonl=suffix == ".jsonl"):
        return cmb.NAME if isinstance(obj, dict) and "option" in obj and "options" not in obj else ours.NAME
    return ours.NAME


def load_mcq(path: str | Path | None = None, layout: str = "auto") -> MCQLoad:
    """Single-answer items of ``path`` (``None``: the bundled ``data/mcq_zh.jsonl``) in ``layout`` or the detected
    one; :class:`~medgspo.errors.ConfigError` for an unknown layout."""
    if layout not in LAYOUT_CHOICES:
        raise ConfigError(f"--mcq_layout must be one of {', '.join(LAYOUT_CHOICES)} (got {layout!r})")
    path = Path(path or BUNDLED_MCQ)
    return LAYOUTS[detect_layout(path) if layout == "auto" else layout](path)


__all__ = ["LAYOUTS", "LAYOUT_CHOICES", "MCQItem", "MCQLoad", "detect_layout", "load_mcq", "normalize_answer"]
