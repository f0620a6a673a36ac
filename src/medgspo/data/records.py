"""Load and validate medical-o1-reasoning-SFT records (``Question``, ``Complex_CoT``, ``Response``).

Sources: a local ``.jsonl`` / ``.json`` / ``.parquet`` file, a directory of them, or a Hugging Face Hub dataset id
such as ``FreedomIntelligence/medical-o1-reasoning-SFT`` (config ``zh``) when online.

Every problem is reported as ``file:line: field: what is wrong``. By default any problem stops the run with a
:class:`DataError` listing all of them; with ``skip_invalid=True`` bad records are skipped and counted instead.
A UTF-8 BOM, CRLF line endings and extra keys are accepted. Run ``medgspo data check PATH`` to validate a file.

Length: a required field longer than :data:`MAX_FIELD_CHARS` characters (50,000) is a problem, found without a
tokenizer: no record the card's 2,048-token limit (or a 32k-token context) can hold is anywhere near it, so such a
field is a broken export (a 3 MiB question), not data. Token limits are checked later, with the model's tokenizer.

Optional fields, written for the bundled data and read by the offline reference judge: ``key_terms`` (the
decisive terms of the answer: diagnosis, drug, procedure) and ``ruled_out`` (the alternatives the reasoning
rejects), each a list of non-empty strings. For the bundled data every key term occurs in ``Response`` and every
ruled-out alternative in ``Complex_CoT`` and not in ``Response`` (:func:`term_problems`, checked by a test).
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.errors import UserError
from medgspo.utils.paths import DATA_DIR

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("Question", "Complex_CoT", "Response")
TERM_FIELDS = ("key_terms", "ruled_out")  # optional lists of strings (see the module doc)
MAX_FIELD_CHARS = 50_000  # a required field longer than this is reported as over-length, no tokenizer needed
HUB_DATASET = "FreedomIntelligence/medical-o1-reasoning-SFT"
HUB_CONFIG = "zh"
SUFFIXES = (".jsonl", ".json", ".parquet")
BUNDLED_DATA = DATA_DIR / "medical_o1_zh.jsonl"
BUNDLED_MCQ = DATA_DIR / "mcq_zh.jsonl"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located by file, line (or row) and field."""

    path: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.field}: {self.message}"


class DataError(UserError):
    """Raised when input data is invalid; ``str()`` lists every problem, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:50])
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the input data:\n{shown}{more}")


@dataclass
class Record:
    """A valid record and where it came from."""

    data: dict[str, Any]
    path: str
    line: int


@dataclass
class LoadReport:
    """What loading did: records kept, problems found, records skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0
    sources: list[str] = field(default_factory=list)


# ---- pure validation --------------------------------------------------------------------------------------------
def validate_record(obj: Any, path: str, line: int | None) -> list[Problem]:
    """Problems of one decoded record (pure: no I/O).

    >>> [str(p) for p in validate_record({"Question": "问？", "Complex_CoT": 3}, "a.jsonl", 2)]
    ['a.jsonl:2: Complex_CoT: expected a string, got int', 'a.jsonl:2: Response: missing']
    """
    if not isinstance(obj, dict):
        return [Problem(path, line, "<record>", f"expected a JSON object, got {_json_type(obj)}")]
    problems = []
    for name in REQUIRED_FIELDS:
        if name not in obj:
            problems.append(Problem(path, line, name, "missing"))
        elif not isinstance(obj[name], str):
            problems.append(Problem(path, line, name, f"expected a string, got {_json_type(obj[name])}"))
        elif not obj[name].strip():
            problems.append(Problem(path, line, name, "empty"))
        elif len(obj[name]) > MAX_FIELD_CHARS:
            message = f"over-length: {len(obj[name]):,} characters, over the cap of {MAX_FIELD_CHARS:,}"
            problems.append(Problem(path, line, name, message))
    for name in TERM_FIELDS:
        value = obj.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
        ):
            problems.append(Problem(path, line, name, "expected a list of non-empty strings"))
    return problems


def term_problems(record: dict[str, Any], path: str = "<record>", line: int | None = None) -> list[Problem]:
    """Where a record's ``key_terms``/``ruled_out`` break the bundled data's rules (pure): a key term absent from
    ``Response``, a ruled-out alternative absent from ``Complex_CoT`` or present in ``Response``.

    >>> rec = {"Complex_CoT": "不像肺结核。", "Response": "肺炎。", "key_terms": ["肺炎"], "ruled_out": ["肺结核", "哮喘"]}
    >>> [str(p) for p in term_problems(rec)]
    ["<record>: ruled_out: '哮喘' does not occur in Complex_CoT"]
    """
    problems = []
    for term in record.get("key_terms") or []:
        if term not in record["Response"]:
            problems.append(Problem(path, line, "key_terms", f"{term!r} does not occur in Response"))
    for term in record.get("ruled_out") or []:
        if term not in record["Complex_CoT"]:
            problems.append(Problem(path, line, "ruled_out", f"{term!r} does not occur in Complex_CoT"))
        if term in record["Response"]:
            problems.append(Problem(path, line, "ruled_out", f"{term!r} occurs in Response (the answer)"))
    return problems


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# ---- decoding files ---------------------------------------------------------------------------------------------
def decode_text(raw: bytes, path: str) -> tuple[str | None, list[Problem]]:
    """Bytes to text: reject empty and binary files and name the line of an invalid UTF-8 byte."""
    if not raw.strip():
        return None, [Problem(path, None, "<file>", "empty file")]
    if b"\x00" in raw[:8192]:
        return None, [Problem(path, None, "<file>", "binary file (contains NUL bytes); expected UTF-8 JSON lines")]
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        msg = f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); re-save the file as UTF-8"
        return None, [Problem(path, line, "<encoding>", msg)]


def iter_jsonl(text: str, path: str) -> Iterable[tuple[int, Any, Problem | None]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line), None
        except json.JSONDecodeError as err:
            yield lineno, None, Problem(path, lineno, "<json>", f"invalid JSON: {err.msg} (column {err.colno})")


def iter_json(text: str, path: str) -> Iterable[tuple[int, Any, Problem | None]]:
    """A JSON array of objects, each element reported with the line it starts on."""
    decoder = json.JSONDecoder()
    try:
        top = json.loads(text)
    except json.JSONDecodeError as err:
        yield err.lineno, None, Problem(path, err.lineno, "<json>", f"invalid JSON: {err.msg} (column {err.colno})")
        return
    if not isinstance(top, list):
        yield 1, None, Problem(path, 1, "<json>", f"expected an array of records, got {_json_type(top)}")
        return
    # Walk the array again with raw_decode to recover the line each element starts on.
    idx = text.index("[") + 1
    for _ in top:
        while text[idx] in " \t\r\n,":
            idx += 1
        obj, idx_end = decoder.raw_decode(text, idx)
        yield text.count("\n", 0, idx) + 1, obj, None
        idx = idx_end


def _iter_parquet(path: Path) -> Iterable[tuple[int, Any, Problem | None]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        yield 0, None, Problem(str(path), None, "<file>", f"not a readable Parquet file ({err})")
        return
    for row, obj in enumerate(table.to_pylist(), start=1):
        yield row, obj, None


def read_file(path: str | Path) -> tuple[list[Record], list[Problem]]:
    """Read one local file; return its valid records and every problem found (never raises for bad content)."""
    path = Path(path)
    name = str(path)
    if path.suffix.lower() == ".parquet":
        rows = _iter_parquet(path)
    else:
        text, problems = decode_text(path.read_bytes(), name)
        if text is None:
            return [], problems
        rows = iter_json(text, name) if path.suffix.lower() == ".json" else iter_jsonl(text, name)
    records, problems = [], []
    for line, obj, problem in rows:
        found = [problem] if problem else validate_record(obj, name, line)
        if found:
            problems.extend(found)
        else:
            records.append(Record(obj, name, line))
    if not records and not problems:
        problems.append(Problem(name, None, "<file>", "no records found"))
    return records, problems


def resolve_files(source: str | Path) -> list[Path]:
    """The data files behind a local path (a file, or every supported file in a directory)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError([Problem(str(path), None, "<path>", f"no {'/'.join(SUFFIXES)} files in this directory")])
        return files
    if not path.exists():
        raise DataError([Problem(str(path), None, "<path>", "no such file or directory")])
    if path.suffix.lower() not in SUFFIXES:
        raise DataError([Problem(str(path), None, "<path>", f"unsupported file type; use {', '.join(SUFFIXES)}")])
    return [path]


def is_hub_id(source: str) -> bool:
    """``owner/name`` that is not a local path."""
    return not Path(source).exists() and source.count("/") == 1 and not source.endswith(SUFFIXES)


def _load_hub(source: str, config: str | None, split: str) -> tuple[list[Record], list[Problem]]:
    from datasets import load_dataset

    logger.info("Loading %s (config %s, split %s) from the Hugging Face Hub", source, config, split)
    try:
        ds = load_dataset(source, config, split=split)
    except Exception as err:  # network, auth and "not found" all surface as different types
        raise DataError([Problem(source, None, "<hub>", f"could not load dataset: {err}")]) from None
    records, problems = [], []
    for row, obj in enumerate(ds, start=1):
        found = validate_record(obj, source, row)
        problems.extend(found)
        if not found:
            records.append(Record(dict(obj), source, row))
    return records, problems


def load_records(
    source: str | Path | None = None,
    *,
    skip_invalid: bool = False,
    hub_config: str | None = HUB_CONFIG,
    hub_split: str = "train",
) -> LoadReport:
    """Load and validate records from a local path or a Hub id (``None`` = the bundled data).

    Raises :class:`DataError` listing every problem unless ``skip_invalid`` is set, in which case bad records are
    skipped and counted in ``LoadReport.skipped``.
    """
    source = str(source or BUNDLED_DATA)
    report = LoadReport()
    if is_hub_id(source):
        records, problems = _load_hub(source, hub_config, hub_split)
        report.sources.append(source)
    else:
        records, problems = [], []
        for path in resolve_files(source):
            recs, probs = read_file(path)
            records.extend(recs)
            problems.extend(probs)
            report.sources.append(str(path))
    report.problems = problems
    if problems and not skip_invalid:
        raise DataError(problems)
    report.skipped = len({(p.path, p.line) for p in problems})
    if report.skipped:
        logger.warning("Skipped %d invalid record(s) (--skip-invalid).", report.skipped)
    report.records = [r.data for r in records]
    if not report.records:
        raise DataError(problems or [Problem(source, None, "<file>", "no valid records")])
    return report


# ---- splitting and length control (pure) ------------------------------------------------------------------------
def train_eval_split(
    records: list[dict[str, Any]], eval_size: float | int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic split: the same records, ``eval_size`` and ``seed`` always give the same two lists.

    ``eval_size`` is a fraction (< 1) or a count. At least one record stays in train.

    >>> train, held = train_eval_split([{"i": i} for i in range(10)], 0.2, seed=0)
    >>> len(train), len(held)
    (8, 2)
    """
    n = len(records)
    n_eval = int(round(eval_size * n)) if isinstance(eval_size, float) and eval_size < 1 else int(eval_size)
    n_eval = max(0, min(n_eval, n - 1))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_eval])
    held_set = set(held)
    return [records[i] for i in range(n) if i not in held_set], [records[i] for i in held]


def fit_length(
    records: list[dict[str, Any]],
    count_tokens: Callable[[dict[str, Any]], int],
    max_length: int,
    policy: str = "drop",
    truncate_cot: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """Keep records whose token count fits ``max_length``.

    ``policy="drop"`` drops oversized records; ``policy="truncate"`` shortens their reasoning with ``truncate_cot``
    (keeping the answer) and drops only those that still do not fit. Returns ``(kept, truncated, dropped)``.
    """
    if policy not in ("drop", "truncate"):
        raise ValueError(f"--oversized must be 'drop' or 'truncate', got {policy!r}")
    kept, truncated, dropped = [], 0, 0
    for rec in records:
        excess = count_tokens(rec) - max_length
        if excess <= 0:
            kept.append(rec)
            continue
        if policy == "truncate" and truncate_cot is not None:
            short = truncate_cot(rec, excess)
            if count_tokens(short) <= max_length:
                kept.append(short)
                truncated += 1
                continue
        dropped += 1
    return kept, truncated, dropped


# ---- statistics (pure) ------------------------------------------------------------------------------------------
def describe(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per specialty and character-length statistics of each field."""
    stats: dict[str, Any] = {"records": len(records)}
    specialties = Counter(str(r.get("specialty", "unspecified")) for r in records)
    stats["specialties"] = dict(sorted(specialties.items()))
    for name in REQUIRED_FIELDS:
        lengths = sorted(len(r[name]) for r in records)
        stats[name] = {
            "min": lengths[0],
            "median": int(statistics.median(lengths)),
            "mean": round(statistics.fmean(lengths), 1),
            "max": lengths[-1],
        }
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable table of :func:`describe` output."""
    lines = [f"records: {stats['records']}", "", "characters      min  median    mean     max"]
    for name in REQUIRED_FIELDS:
        s = stats[name]
        lines.append(f"{name:<12} {s['min']:>6} {s['median']:>7} {s['mean']:>7} {s['max']:>7}")
    lines += ["", "specialty                 records"]
    lines += [f"{name:<24} {count:>8}" for name, count in stats["specialties"].items()]
    return "\n".join(lines)
