"""``medgspo judge``: score a JSONL file with the judge and write the verdicts next to the inputs;
``medgspo judge calibrate`` measures the judge against labelled verdicts (:mod:`.calibrate`).

    medgspo judge --input completions.jsonl --output judged.jsonl      # the offline reference heuristic
    medgspo judge --input completions.jsonl --output judged.jsonl --judge_backend openai \\
        --judge_cache runs/judge_cache.sqlite                          # DeepSeek, key in $DEEPSEEK_API_KEY
    medgspo judge --input completions.jsonl --output judged.jsonl --judge_backend local \\
        --judge_base_url http://127.0.0.1:8000/v1 --judge_model Qwen/Qwen3-32B
    medgspo judge calibrate --input data/judge_calibration_zh.jsonl --output runs/cal   # agreement with labels

Input lines hold ``question``, ``reference`` and either ``completion`` (a full model output: the answer after
``</think>`` is judged) or ``answer`` (already the final answer). Output lines keep the input fields and add
``score`` (tier value or null), ``label``, ``error`` (null or the reason), ``cached`` and ``judge_reason``.
The judge flags are :class:`~medgspo.judge.config.JudgeConfig`, the same as in ``gspo``, ``pipeline`` and
``eval``. The API key is read from the environment variable named by ``--judge_api_key_env`` and never printed.
The judge is checked with one tiny request before anything is judged (:mod:`.preflight`).
Exit codes (set by :func:`medgspo.cli.main`): 0 done (failed judgments are null and counted in the summary),
2 bad input or options, 3 fatal judge error (bad key, no balance, rejected request), 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.errors import UserError
from medgspo.judge.api.accounting import JudgeStats, Judgment, summary_lines
from medgspo.judge.api.base import Judge
from medgspo.judge.api.preflight import preflight
from medgspo.judge.backends import make_judge
from medgspo.judge.calibration.run import CalibrateArguments, calibrate, table_lines
from medgspo.judge.config import JudgeConfig
from medgspo.judge.rubric.prompt import JudgeItem
from medgspo.utils.cli import Command
from medgspo.utils.io import write_jsonl

_CHUNK = 4096  # items per judge_batch call (bounds memory; concurrency is bounded by --judge_concurrency)


@dataclass
class JudgeFileArguments:
    """What to judge and where the verdicts go."""

    input: str = field(metadata={"help": "JSONL with question, reference and completion or answer on each line."})
    output: str = field(metadata={"help": "JSONL to write: the input fields plus score, label, error, cached."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar on stderr (--no_progress hides it)."})


def run(files: JudgeFileArguments, config: JudgeConfig) -> int:
    """Run ``medgspo judge``: read, judge, write, print the summary; returns 0 (errors are raised)."""
    start = time.perf_counter()
    items, rows = read_items(Path(files.input))
    judge = make_judge(config)
    if judge.needs_calls(items):  # a rerun whose verdicts are all cached makes no request, the preflight included
        preflight(config)
    try:
        judgments, stats = asyncio.run(_judge_all(judge, items, show_progress=files.progress))
    except KeyboardInterrupt:
        if config.judge_cache:
            print(
                f"finished verdicts are in the cache {config.judge_cache}; a rerun will not pay for them",
                file=sys.stderr,
            )
        raise
    try:
        write_jsonl(files.output, [_output_row(row, j) for row, j in zip(rows, judgments, strict=True)])
    except OSError as exc:
        raise UserError(f"cannot write --output {files.output}: {exc}") from None
    stats.wall_s = time.perf_counter() - start
    for line in summary_lines(stats, config.prices):
        print(line)
    if config.judge_backend != "reference":
        print(f"prices: {config.price_note}")
    print(f"output: {files.output}")
    return 0


def read_items(path: Path) -> tuple[list[JudgeItem], list[dict[str, Any]]]:
    """Parse and validate the input JSONL; a :class:`~medgspo.errors.UserError` names the file and line."""
    if not path.is_file():
        raise UserError(f"--input file not found: {path}")
    items, rows = [], []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    items.append(JudgeItem.from_mapping(row))
                except ValueError as exc:
                    raise UserError(f"{path}:{number}: {exc}") from None
                rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --input {path}: {exc}") from None
    if not rows:
        raise UserError(f"--input file is empty: {path}")
    return items, rows


def _output_row(row: dict[str, Any], judgment: Judgment) -> dict[str, Any]:
    """An input line plus its verdict."""
    return {
        **row,
        "score": judgment.score,
        "label": judgment.label,
        "error": judgment.error,
        "cached": judgment.cached,
        "judge_reason": judgment.reason,
    }


async def _judge_all(
    judge: Judge, items: list[JudgeItem], *, show_progress: bool
) -> tuple[list[Judgment], JudgeStats]:
    from tqdm.auto import tqdm

    stats = JudgeStats()
    results: list[Judgment] = []
    try:
        # disable=None: shown on a terminal, hidden when stderr is a file or a pipe
        with tqdm(total=len(items), unit="item", desc="judging", disable=None if show_progress else True) as bar:
            for start in range(0, len(items), _CHUNK):
                results += await judge.judge_batch(items[start : start + _CHUNK], stats=stats, progress=bar.update)
    finally:
        await judge.aclose()
    return results, stats


def run_calibrate(args: CalibrateArguments, config: JudgeConfig) -> int:
    """Run ``medgspo judge calibrate``: judge the labelled set, write the outputs, print the table."""
    summary = calibrate(args, config)
    for line in table_lines(summary):
        print(line)
    print(f"output: {args.output} (judgments.jsonl, calibration.json, confusion_matrix.png)")
    return 0


@dataclass(frozen=True)
class JudgeCommand(Command):
    """``medgspo judge`` plus actions named by the first argument (``medgspo judge calibrate ...``)."""

    actions: tuple[Command, ...] = ()

    def __call__(self, argv: Sequence[str]) -> int:
        action = next((a for a in self.actions if argv and a.name == f"{self.name} {argv[0]}"), None)
        return action(argv[1:]) if action else super().__call__(argv)


CALIBRATE = Command(
    name="judge calibrate",
    arguments=(CalibrateArguments, JudgeConfig),
    run=run_calibrate,
    description="Measure the judge's agreement with labelled verdicts (accuracy, coverage, kappa, confusion "
    "matrix, cost) before paying for GSPO. Default input: the labelled set shipped with medgspo.",
)
COMMANDS = [
    JudgeCommand(
        name="judge",
        arguments=(JudgeFileArguments, JudgeConfig),
        run=run,
        description="Score a JSONL file of answers with the 5-tier medical judge (an LLM API, a local server or "
        "the offline reference heuristic) and write the verdicts. `medgspo judge calibrate --help`: measure the "
        "judge against labelled verdicts.",
        actions=(CALIBRATE,),
    )
]
