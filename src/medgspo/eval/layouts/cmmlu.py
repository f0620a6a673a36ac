"""CMMLU (haonan-li/CMMLU): one CSV per subject, options in columns A-D; a folder of them is one benchmark.

    medgspo eval --task mcq --data CMMLU/data/test --subjects medical         # the 8 medical subjects, one run
    medgspo eval --task mcq --data CMMLU/data/test/anatomy.csv

The header, exactly, and a real row of ``data/test/clinical_knowledge.csv`` (the first column is an unnamed index)::

    ,Question,A,B,C,D,Answer
    1,对评估肝硬化患者预后意义不大的是,腹水,清蛋白,血电解质,凝血酶原时间,C

The subject is the file name without ``.csv``. A folder is read as every ``*.csv`` directly inside it (``data/test``,
not ``data``), or only those named by ``subjects``; ``medical`` stands for :data:`MEDICAL_SUBJECTS`. A record's
line is the physical line it starts on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medgspo.data.records import DataError, Problem
from medgspo.errors import ConfigError
from medgspo.eval.layouts.base import Checked, MCQLoad, csv_rows, finish, make_item

NAME = "cmmlu"
OPTION_COLUMNS = ("A", "B", "C", "D")
COLUMNS = ("Question", *OPTION_COLUMNS, "Answer")
FIELDS = {"question": "Question", "options": "A-D", "answer": "Answer"}
# CMMLU's medical subjects (the files under data/test/), the set medical models report.
MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_medicine",
    "genetics",
    "nutrition",
    "professional_medicine",
    "traditional_chinese_medicine",
    "virology",
)


def is_cmmlu_header(header: Iterable[str]) -> bool:
    """Whether a CSV header has CMMLU's columns.

    >>> is_cmmlu_header(["", "Question", "A", "B", "C", "D", "Answer"]), is_cmmlu_header(["Question", "Options"])
    (True, False)
    """
    return set(COLUMNS) <= set(header)


def expand_subjects(subjects: Iterable[str] | None) -> list[str] | None:
    """``--subjects`` values as subject names: ``medical`` expands to :data:`MEDICAL_SUBJECTS`, commas split,
    ``.csv`` is dropped, duplicates go.

    >>> expand_subjects(["anatomy,virology.csv", "anatomy"])
    ['anatomy', 'virology']
    >>> len(expand_subjects(["medical"]))
    8
    """
    if subjects is None:
        return None
    names: list[str] = []
    for value in subjects:
        for part in str(value).split(","):
            part = part.strip().removesuffix(".csv")
            names += list(MEDICAL_SUBJECTS) if part == "medical" else [part] if part else []
    return list(dict.fromkeys(names))


def subject_files(path: Path, subjects: list[str] | None = None) -> list[Path]:
    """The CSV files ``path`` stands for (a file, or the ``*.csv`` in a folder), kept to ``subjects``.
    :class:`DataError` for a folder with no CSV; :class:`ConfigError` for a subject that has no file."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        hint = " (point --data at data/test)" if (path / "test").is_dir() else ""
        raise DataError([Problem(str(path), None, "<path>", f"no .csv subject files in this folder{hint}")])
    if subjects is None:
        return files
    by_name = {f.stem: f for f in files}
    unknown = [s for s in subjects if s not in by_name]
    if unknown:
        raise ConfigError(
            f"--subjects: no subject file {', '.join(u + '.csv' for u in unknown)} in {path}; "
            f"available: {', '.join(by_name)}"
        )
    return [by_name[s] for s in subjects]


def check_file(path: Path) -> list[Checked]:
    """Every record of one subject file, checked (the subject is the file name)."""
    name = str(path)
    _, rows = csv_rows(path, COLUMNS)
    results: list[Checked] = []
    for line, row in rows:
        fields = {
            "question": row.get("Question"),
            "options": {column: row.get(column) or "" for column in OPTION_COLUMNS},
            "answer": row.get("Answer"),
            "subject": path.stem,
        }
        results.append(make_item(fields, FIELDS, name, line))
    return results


def load(path: str | Path, subjects: Iterable[str] | None = None) -> MCQLoad:
    """The items of a CMMLU subject file or folder of them (one :class:`MCQLoad`; every file's problems at once)."""
    path = Path(path)
    results: list[Checked] = []
    problems: list[Problem] = []
    for file in subject_files(path, expand_subjects(subjects)):
        try:
            results += check_file(file)
        except DataError as err:
            problems += err.problems
    if problems:  # a file that could not be read at all: report it with every bad row of the others
        raise DataError([p for _, _, found in results for p in found] + problems)
    return finish(str(path), NAME, results)
