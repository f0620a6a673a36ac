"""Several multiple-choice benchmarks in one run: load each ``--data`` path, name it, cut it to ``--limit``.

    medgspo eval --task mcq --data MedQA/.../Mainland/test.jsonl --data CMMLU/data/test --subjects medical

:func:`load_benchmarks` turns the paths into :class:`Benchmark` objects (one per path: a file, or a folder of CMMLU
subject files). Each is named after its layout (``MedQA-MCMLE (5 options)``, ``CMMLU``, ``CMExam``, ``CMB-Exam``,
``medgspo``); two paths with the same name get their path appended. Problems in several files are reported together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medgspo.data.records import DataError, Problem
from medgspo.errors import ConfigError
from medgspo.eval.layouts import MCQItem, MCQLoad, load_mcq
from medgspo.eval.layouts import cmmlu as cmmlu_layout

DISPLAY_NAMES = {"medgspo": "medgspo", "cmexam": "CMExam", "cmb": "CMB-Exam", "medqa": "MedQA-MCMLE", "cmmlu": "CMMLU"}


@dataclass
class Benchmark:
    """One benchmark of a run: its items and what loading it found."""

    name: str
    layout: str
    source: str
    items: list[MCQItem]
    skipped_multi: int = 0
    key_mismatches: list[Problem] = field(default_factory=list)

    def notes(self) -> dict:
        """What the report says about the data (JSON-ready)."""
        return {
            "layout": self.layout,
            "source": self.source,
            "n": len(self.items),
            "skipped_multi_answer": self.skipped_multi,
            "key_mismatches": [str(p) for p in self.key_mismatches],
        }


def display_name(load: MCQLoad) -> str:
    """The benchmark's name in tables: its layout's, with the option count for MedQA (5- and 4-option files).

    >>> display_name(MCQLoad([MCQItem("问", {"A": "甲", "B": "乙", "C": "丙", "D": "丁"}, "A")], layout="medqa"))
    'MedQA-MCMLE (4 options)'
    """
    name = DISPLAY_NAMES.get(load.layout, load.layout)
    if load.layout == "medqa":
        name += f" ({max(len(item.options) for item in load.items)} options)"
    return name


def limit_items(items: list[MCQItem], limit: int | None, per_subject: bool) -> list[MCQItem]:
    """The first ``limit`` items, or the first ``limit`` of each subject (a CMMLU folder: each subject file).

    >>> items = [MCQItem(q, {"A": "甲", "B": "乙"}, "A", s) for q, s in [("1", "x"), ("2", "x"), ("3", "y")]]
    >>> [i.question for i in limit_items(items, 1, False)], [i.question for i in limit_items(items, 1, True)]
    (['1'], ['1', '3'])
    """
    if limit is None:
        return items
    if not per_subject:
        return items[:limit]
    seen: dict[str | None, int] = {}
    kept = []
    for item in items:
        seen[item.subject] = seen.get(item.subject, 0) + 1
        if seen[item.subject] <= limit:
            kept.append(item)
    return kept


def _unique_names(benchmarks: list[Benchmark]) -> None:
    """Two benchmarks with the same name get their source appended (``CMExam (a/test.csv)``)."""
    names = [b.name for b in benchmarks]
    for bench in benchmarks:
        if names.count(bench.name) > 1:
            bench.name = f"{bench.name} ({bench.source})"


def load_benchmarks(
    paths: Sequence[str] | None,
    layout: str = "auto",
    subjects: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Benchmark]:
    """One :class:`Benchmark` per path (``None``: the bundled ``data/mcq_zh.jsonl``); ``subjects`` picks CMMLU
    subject files and is a :class:`ConfigError` when no path is CMMLU. Every file's problems are raised together."""
    benchmarks: list[Benchmark] = []
    problems: list[Problem] = []
    for path in paths or [None]:
        try:
            loaded = load_mcq(path, layout, subjects)
        except DataError as err:
            problems += err.problems
            continue
        is_folder = path is not None and Path(path).is_dir()
        items = limit_items(loaded.items, limit, per_subject=loaded.layout == cmmlu_layout.NAME and is_folder)
        bench = Benchmark(display_name(loaded), loaded.layout, loaded.source, items, loaded.skipped_multi)
        kept = {(item.source, item.line) for item in items}
        bench.key_mismatches = [p for p in loaded.mismatches if (p.path, p.line) in kept]  # of the graded rows only
        benchmarks.append(bench)
    if problems:
        raise DataError(problems)
    if subjects and not any(b.layout == cmmlu_layout.NAME for b in benchmarks):
        raise ConfigError("--subjects picks CMMLU subject files, but no --data is CMMLU")
    _unique_names(benchmarks)
    return benchmarks
