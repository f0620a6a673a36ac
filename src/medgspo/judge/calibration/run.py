"""``medgspo judge calibrate``: measure a judge's agreement with labelled verdicts before paying for GSPO.

    medgspo judge calibrate --input data/judge_calibration_zh.jsonl --judge_backend reference --output runs/cal
    medgspo judge calibrate --input data/judge_calibration_zh.jsonl --output runs/cal-flash \\
        --judge_backend openai --judge_model deepseek-flash --repeats 3      # key in $DEEPSEEK_API_KEY

``--input`` is a labelled JSONL: ``question``, ``reference``, ``answer`` and ``label`` (one of the five tiers:
+2.0, +0.5, 0.0, -0.5, -1.0, or A-E) on every line; other fields (``id``, ``specialty``, ``note``) are kept. The
default is the set shipped with medgspo (``data/judge_calibration_zh.jsonl``). Every judge back-end and flag of
``medgspo judge`` works here. ``--output DIR`` receives:

* ``judgments.jsonl``: one line per item, the input fields plus ``label`` (the gold tier value), ``score`` (the
  judge's, or null), ``judge_label``, ``judge_reason``, ``error``, ``correct`` and, with ``--repeats``, ``scores``
  (every repeat's verdict; ``score`` is the first);
* ``calibration.json``: the metrics of :mod:`.calibration` computed from exactly those lines, plus the judge,
  calls, tokens and estimated cost of all repeats;
* ``confusion_matrix.png``; the console shows the same matrix with per-tier precision and recall.

With ``--repeats N`` every item is judged N times; the first pass may use ``--judge_cache``, the others never do
(a cached verdict cannot change). The judge is checked first (:mod:`.preflight`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.data.records import DataError, Problem
from medgspo.errors import ConfigError, UserError
from medgspo.judge.api.accounting import JudgeStats, Judgment
from medgspo.judge.api.preflight import preflight
from medgspo.judge.calibration.metrics import LABELS, NONE_COLUMN, adversarial_summary, summarize, tier_value
from medgspo.judge.config import JudgeConfig
from medgspo.utils.io import write_json, write_jsonl
from medgspo.utils.paths import DATA_DIR

BUNDLED_CALIBRATION = DATA_DIR / "judge_calibration_zh.jsonl"
BUNDLED_ATTACKS = DATA_DIR / "judge_attacks_zh.jsonl"
REQUIRED = ("question", "reference")  # ``answer`` may be empty: a policy emits that, and it scores -1.0 by rule
TERM_FIELDS = ("key_terms", "ruled_out")


@dataclass
class CalibrateArguments:
    """Which labelled set to judge, how often, and where the results go."""

    output: str = field(metadata={"help": "Folder for judgments.jsonl, calibration.json, confusion_matrix.png."})
    input: str = field(
        default=str(BUNDLED_CALIBRATION),
        metadata={"help": "Labelled JSONL: question, reference, answer, label (default: the shipped set)."},
    )
    repeats: int = field(default=1, metadata={"help": "Judge every item N times and report how often it changes."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar on stderr (--no_progress hides it)."})


def read_labelled(path: Path) -> list[dict[str, Any]]:
    """The labelled rows of ``path``, ``label`` turned into its tier value; every problem is reported at once."""
    if not path.is_file():
        raise UserError(f"--input file not found: {path}")
    rows, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --input {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(str(path), number, "(line)", f"not JSON: {exc}"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(str(path), number, "(line)", "not a JSON object"))
            continue
        bad = [f for f in REQUIRED if not isinstance(row.get(f), str) or not row[f].strip()]
        problems += [Problem(str(path), number, f, "missing or not a non-empty string") for f in bad]
        if not isinstance(row.get("answer"), str):
            bad.append("answer")
            problems.append(Problem(str(path), number, "answer", "missing or not a string (it may be empty)"))
        for name in ["label", *(n for n in row if n.startswith("label_"))]:  # label_v1: gold under rubric v1
            try:
                row[name] = tier_value(row.get(name))
            except ValueError as exc:
                problems.append(Problem(str(path), number, name, str(exc)))
                bad.append(name)
        if not bad:
            rows.append(row)
    if problems:
        raise DataError(problems)
    if not rows:
        raise UserError(f"--input file is empty: {path}")
    return rows


def calibrate(args: CalibrateArguments, config: JudgeConfig) -> dict[str, Any]:
    """Judge the labelled set ``--repeats`` times and write the three outputs; returns ``calibration.json``'s
    content (``medgspo judge calibrate`` prints it as :func:`table_lines`)."""
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1 (got {args.repeats})")
    start = time.perf_counter()
    rows = [gold_for_rubric(row, config.judge_rubric) for row in read_labelled(Path(args.input))]
    preflight(config)
    stats = JudgeStats()
    passes = [
        asyncio.run(
            _judge_pass(config if r == 0 else dataclasses.replace(config, judge_cache=None), rows, stats, args)
        )
        for r in range(args.repeats)
    ]
    judged = [_output_row(row, [p[i] for p in passes], args.repeats) for i, row in enumerate(rows)]
    out = Path(args.output)
    try:
        write_jsonl(out / "judgments.jsonl", judged)
        summary = calibration_summary(judged, args.repeats)
        summary |= _run_facts(args, config, stats, time.perf_counter() - start)
        write_json(out / "calibration.json", summary)
    except OSError as exc:
        raise UserError(f"cannot write --output {out}: {exc}") from None
    from medgspo.judge.calibration.plot import plot_confusion

    plot_confusion(summary, out / "confusion_matrix.png")
    return summary


def gold_for_rubric(row: dict[str, Any], rubric: str) -> dict[str, Any]:
    """``row`` with ``label`` the gold tier under ``rubric``: ``label_<rubric>`` where an item carries one (an item
    a rubric version labels differently), else ``label``.

    >>> gold_for_rubric({"label": -0.5, "label_v1": 2.0}, "v1")["label"], gold_for_rubric({"label": -0.5}, "v1")
    (2.0, {'label': -0.5})
    """
    own = row.get(f"label_{rubric}")
    return row if own is None else {**row, "label": own}


def calibration_summary(judged: list[dict[str, Any]], repeats: int = 1) -> dict[str, Any]:
    """The metrics implied by the lines of ``judgments.jsonl`` (``label``, ``score``, ``scores``): what
    ``calibration.json`` holds, and what a test recomputes from the file. For an attack set (rows with ``kind``),
    also ``adversarial``: attacks scored above their deserved tier and controls punished, per class."""
    gold = [float(r["label"]) for r in judged]
    pred = [None if r["score"] is None else float(r["score"]) for r in judged]
    repeated = [r["scores"] for r in judged] if repeats > 1 else None
    summary = summarize(gold, pred, repeated)
    if (adversarial := adversarial_summary(judged)) is not None:
        summary["adversarial"] = adversarial
    return summary


async def _judge_pass(
    config: JudgeConfig, rows: list[dict[str, Any]], stats: JudgeStats, args: CalibrateArguments
) -> list[Judgment]:
    """One judgment of every row with a fresh judge (its stats merged into ``stats``)."""
    from tqdm.auto import tqdm

    from medgspo.judge.backends import make_judge

    judge = make_judge(config)
    items = [
        {k: r[k] for k in ("question", "reference", "answer", *TERM_FIELDS) if r.get(k) is not None} for r in rows
    ]
    try:
        with tqdm(total=len(items), unit="item", desc="judging", disable=None if args.progress else True) as bar:
            return await judge.judge_batch(items, stats=stats, progress=bar.update)
    finally:
        await judge.aclose()


def _output_row(row: dict[str, Any], judgments: list[Judgment], repeats: int) -> dict[str, Any]:
    first = judgments[0]
    out = {
        **row,
        "score": first.score,
        "judge_label": first.label,
        "judge_reason": first.reason,
        "error": first.error,
        "correct": first.score is not None and first.score == row["label"],
    }
    if repeats > 1:
        out["scores"] = [j.score for j in judgments]
    return out


def _run_facts(args: CalibrateArguments, config: JudgeConfig, stats: JudgeStats, wall_s: float) -> dict[str, Any]:
    """What was judged, by which judge, and what it cost (all repeats together)."""
    from medgspo.judge.rubric.prompt import load_rubric

    judge = {"backend": config.judge_backend, "rubric": load_rubric(config.judge_rubric).version}
    if config.judge_backend != "reference":
        judge |= {"model": config.model, "base_url": config.endpoint}
    return {
        "input": args.input,
        "judge": judge,
        "calls": stats.calls,
        "failures": stats.failures,
        "abstained": stats.abstained,
        "unparsed": stats.unparsed,
        "manipulation_rule": stats.manipulation,
        "tokens": {
            "prompt": stats.prompt_tokens,
            "cached_prompt": stats.cached_prompt_tokens,
            "completion": stats.completion_tokens,
        },
        "cost_usd": round(stats.cost(config.prices), 6),
        "price_note": config.price_note,
        "wall_s": round(wall_s, 2),
    }


def adversarial_lines(adversarial: dict[str, Any] | None) -> list[str]:
    """Console lines of an attack set: attacks above their deserved tier and controls punished, per class."""
    if not adversarial:
        return []
    lines = []
    for kind, counted, words in (
        ("attacks", "above_deserved", "above the tier it deserves"),
        ("controls", "punished", "punished"),
    ):
        part = adversarial.get(kind)
        if not part or not part["n"]:
            continue
        lines.append(f"{kind}: {part[counted]} of {part['n']} {words} ({part['no_score']} without a score)")
        for name, entry in part["by_class"].items():
            rule = f", {entry['stopped_by_rule']} stopped by rule" if entry["stopped_by_rule"] else ""
            lines.append(f"  {name:<24} {entry[counted]:>3} of {entry['n']:>3}{rule}")
    return lines


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_lines(summary: dict[str, Any]) -> list[str]:
    """The console table: the confusion matrix with recall per gold tier and precision per verdict, then the
    headline numbers."""
    matrix, tiers = summary["confusion_matrix"]["matrix"], summary["per_tier"]
    header = "gold \\ judge " + "".join(f"{c:>7}" for c in [*LABELS, NONE_COLUMN]) + "  recall"
    lines = [header]
    for key, counts in zip(LABELS, matrix, strict=True):
        lines.append(f"{key:<13}" + "".join(f"{c:>7}" for c in counts) + f"  {_fmt(tiers[key]['recall'], 2):>6}")
    lines.append(f"{'precision':<13}" + "".join(f"{_fmt(tiers[k]['precision'], 2):>7}" for k in LABELS))
    lines.append(
        f"n {summary['n']} | accuracy {_fmt(summary['accuracy'])} | coverage {_fmt(summary['coverage'])} | "
        f"decided accuracy {_fmt(summary['decided_accuracy'])} | kappa {_fmt(summary['kappa'])} | "
        f"weighted kappa {_fmt(summary['weighted_kappa'])} | precision of +2.0 {_fmt(summary['precision_plus2'])}"
    )
    lines += adversarial_lines(summary.get("adversarial"))
    if summary.get("judge"):
        lines.append(f"judge {summary['judge']} (gold labels of rubric {summary['judge']['rubric'].split('@')[0]})")
    if summary.get("verdict_change_rate") is not None:
        lines.append(f"verdict changed across {summary['repeats']} repeats on {summary['verdict_change_rate']:.1%}")
    if "calls" in summary:
        tokens = summary["tokens"]
        lines.append(
            f"calls {summary['calls']} | failures {summary['failures']} | tokens prompt {tokens['prompt']:,} "
            f"(cache hits {tokens['cached_prompt']:,}) completion {tokens['completion']:,} | estimated cost "
            f"${summary['cost_usd']:.4f} ({summary['price_note']})"
        )
    return lines
