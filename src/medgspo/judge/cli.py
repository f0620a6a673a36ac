"""``medgspo judge``: score a JSONL file with the judge and write the verdicts next to the inputs.

    medgspo judge --input completions.jsonl --output judged.jsonl --cache runs/judge_cache.sqlite
    medgspo judge --input completions.jsonl --output judged.jsonl --backend local \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-32B
    medgspo judge --input completions.jsonl --output judged.jsonl --backend reference

Input lines hold ``question``, ``reference`` and either ``completion`` (a full model output: the answer after
``</think>`` is judged) or ``answer`` (already the final answer). Output lines keep the input fields and add
``score`` (tier value or null), ``label``, ``error`` (null or the reason), ``cached`` and ``judge_reason``.
The API key is read from the environment variable named by ``--api-key-env`` and never printed.
Exit codes: 0 done (failed judgments are null and counted in the summary), 2 bad input or options,
3 fatal judge error (bad key, no balance, rejected request), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from medgspo.judge import BACKENDS, JudgeConfig, JudgeFatalError, make_judge
from medgspo.judge.accounting import JudgeStats, Judgment, summary_lines
from medgspo.judge.prompt import JudgeItem

logger = logging.getLogger(__name__)

_CHUNK = 4096  # items per judge_batch call (bounds memory; concurrency is bounded by --concurrency)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``judge`` options to ``parser``."""
    defaults = JudgeConfig()
    parser.add_argument("--input", required=True, type=Path, help="JSONL with question, reference, completion|answer")
    parser.add_argument("--output", required=True, type=Path, help="JSONL to write (inputs + score/error/cached)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="openai",
        help="openai: an OpenAI-compatible API (DeepSeek by default); local: a local server "
        "(vLLM, SGLang, Ollama), no key needed; reference: offline lexical heuristic",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default https://api.deepseek.com; with --backend local http://127.0.0.1:8000/v1)",
    )
    parser.add_argument("--model", default=None, help="judge model name (default deepseek-chat; required for local)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="max judge calls in flight")
    parser.add_argument("--cache", type=Path, default=None, help="SQLite verdict cache; reruns pay nothing twice")
    parser.add_argument(
        "--api-key-env",
        default=defaults.api_key_env,
        help="environment variable that holds the API key (default %(default)s)",
    )
    parser.add_argument("--deadline", type=float, default=defaults.deadline_s, help="hard limit per call, seconds")
    parser.add_argument("--max-retries", type=int, default=defaults.max_retries)
    parser.add_argument(
        "--max-answer-chars",
        type=int,
        default=defaults.max_answer_chars,
        help="longer answers are cut in the middle before judging",
    )
    parser.add_argument("--no-json-mode", action="store_true", help="do not request response_format=json_object")
    parser.add_argument(
        "--price-input",
        type=float,
        default=defaults.price_input_per_mtok,
        help="USD per million input tokens (default: DeepSeek list price)",
    )
    parser.add_argument(
        "--price-cached-input",
        type=float,
        default=defaults.price_cached_input_per_mtok,
        help="USD per million input tokens served from the provider's prefix cache",
    )
    parser.add_argument(
        "--price-output", type=float, default=defaults.price_output_per_mtok, help="USD per million output tokens"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``medgspo judge``; returns the exit code (messages, never tracebacks, for user and judge errors)."""
    start = time.perf_counter()
    for name in ("httpx", "httpx2"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        items, rows = read_items(args.input)
        judge = make_judge(config)
    except (OSError, ValueError) as exc:
        return _error(str(exc), 2)
    except JudgeFatalError as exc:
        return _error(str(exc), 3)
    try:
        judgments, stats = asyncio.run(_judge_all(judge, items, show_progress=not args.no_progress))
    except JudgeFatalError as exc:
        return _error(str(exc), 3)
    except KeyboardInterrupt:
        return _error("interrupted; finished verdicts are in the cache (--cache), a rerun will not pay for them", 130)
    try:
        write_rows(args.output, rows, judgments)
    except OSError as exc:
        return _error(f"cannot write {args.output}: {exc}", 2)
    stats.wall_s = time.perf_counter() - start
    for line in summary_lines(stats, config.prices):
        _say(line)
    _say(f"output: {args.output}")
    return 0


def config_from_args(args: argparse.Namespace) -> JudgeConfig:
    """The :class:`JudgeConfig` the options describe (``ValueError`` names the option to change)."""
    if args.backend == "local" and not args.model:
        raise ValueError("--backend local needs --model (the name the local server serves)")
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1 (got {args.concurrency})")
    if args.deadline <= 0:
        raise ValueError(f"--deadline must be > 0 seconds (got {args.deadline})")
    return JudgeConfig(
        backend=args.backend,
        base_url=args.base_url,
        model=args.model or JudgeConfig.model,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        cache_path=str(args.cache) if args.cache else None,
        deadline_s=args.deadline,
        max_retries=args.max_retries,
        max_answer_chars=args.max_answer_chars,
        json_mode=not args.no_json_mode,
        price_input_per_mtok=args.price_input,
        price_cached_input_per_mtok=args.price_cached_input,
        price_output_per_mtok=args.price_output,
    )


def read_items(path: Path) -> tuple[list[JudgeItem], list[dict[str, Any]]]:
    """Parse and validate the input JSONL; errors name the file and line."""
    if not path.is_file():
        raise ValueError(f"input file not found: {path}")
    items, rows = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(JudgeItem.from_mapping(row))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
            rows.append(row)
    if not rows:
        raise ValueError(f"input file is empty: {path}")
    return items, rows


def write_rows(path: Path, rows: list[dict[str, Any]], judgments: list[Judgment]) -> None:
    """Write inputs plus verdicts, atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row, j in zip(rows, judgments, strict=True):
            out = {
                **row,
                "score": j.score,
                "label": j.label,
                "error": j.error,
                "cached": j.cached,
                "judge_reason": j.reason,
            }
            handle.write(json.dumps(out, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


async def _judge_all(judge: Any, items: list[JudgeItem], *, show_progress: bool) -> tuple[list[Judgment], JudgeStats]:
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


def _say(text: str) -> None:
    print(text)  # noqa: T201


def _error(message: str, code: int) -> int:
    print(f"medgspo judge: error: {message}", file=sys.stderr)  # noqa: T201
    return code
