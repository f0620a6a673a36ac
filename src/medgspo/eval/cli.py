"""``medgspo eval``: evaluate one or more models on open-ended questions (5-tier judge) or multiple choice.

    medgspo eval                                              # tiny model, bundled held-out questions, offline judge
    medgspo eval --model tiny --adapter none --adapter runs/tiny/sft --limit 16
    medgspo eval --model Qwen/Qwen3.5-4B --adapter none --adapter runs/sft --adapter runs/gspo \\
        --judge-backend openai --judge-cache runs/judge_cache.sqlite
    medgspo eval --task mcq --data CMExam/test.csv --model tiny --adapter runs/tiny/sft

Models: each ``--model`` is paired with the ``--adapter`` in the same position (``none`` = no adapter); a single
``--model`` with several ``--adapter`` evaluates every adapter on that base. ``--name`` labels the table rows
(default: the adapter folder's name, else the model's). Open-ended data defaults to the ``eval_split.jsonl`` saved
beside the first adapter, else the bundled records' held-out split (the one ``medgspo sft`` holds out by default);
multiple choice defaults to the bundled ``data/mcq_zh.jsonl``.

Outputs in ``--output-dir``: ``generations.jsonl``, ``eval.json``, ``eval.md``, ``eval.png`` (open) or
``mcq_generations.jsonl``, ``mcq.json``, ``mcq.md`` (mcq). Exit codes: 0 done, 2 bad input or options, 3 fatal judge
error (bad key, no balance), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from medgspo.eval.mcq import LAYOUTS
from medgspo.judge import BACKENDS, TIERS, JudgeConfig, JudgeFatalError

logger = logging.getLogger(__name__)

NO_ADAPTER = ("none", "-", "")
DEFAULT_OUTPUT = Path("runs") / "eval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` options to ``parser``."""
    models = parser.add_argument_group("models")
    models.add_argument("--model", action="append", metavar="PATH_OR_ID",
                        help="base model: a folder, a Hub id or `tiny` (repeatable; default: tiny)")  # fmt: skip
    models.add_argument("--adapter", action="append", metavar="DIR",
                        help="LoRA adapter folder for the --model in the same position, or `none` (repeatable); "
                        "with a single --model every adapter is evaluated on it")  # fmt: skip
    models.add_argument("--name", action="append", metavar="NAME",
                        help="table label of the model in the same position "
                        "(default: the adapter's or the model's name)")  # fmt: skip

    task = parser.add_argument_group("task and data")
    task.add_argument("--task", choices=("open", "mcq"), default="open",
                      help="open: judged free answers (default); mcq: multiple-choice accuracy")  # fmt: skip
    task.add_argument("--data", metavar="PATH",
                      help="open: medical-o1 records (.jsonl/.json/.parquet or folder); mcq: our .jsonl, a CMExam "
                      ".csv or a CMB-Exam .json (default: bundled data, see the module help)")  # fmt: skip
    task.add_argument("--mcq-layout", choices=LAYOUTS, default="auto", help="input layout of --data for --task mcq")
    task.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N questions")
    task.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="where results go (default %(default)s)")

    defaults = JudgeConfig()
    judge = parser.add_argument_group("judge (open task)")
    judge.add_argument("--judge-backend", choices=BACKENDS, default="reference",
                       help="reference: offline lexical heuristic (default); openai: an OpenAI-compatible API "
                       "(DeepSeek by default); local: a local server such as vLLM")  # fmt: skip
    judge.add_argument("--judge-base-url", help="API base URL (default: DeepSeek; local: http://127.0.0.1:8000/v1)")
    judge.add_argument("--judge-model", help=f"judge model name (default {defaults.model}; required for local)")
    judge.add_argument("--judge-concurrency", type=int, default=defaults.concurrency, help="max judge calls in flight")
    judge.add_argument("--judge-cache", type=Path, help="SQLite verdict cache; reruns pay nothing twice")
    judge.add_argument("--api-key-env", default=defaults.api_key_env,
                       help="environment variable holding the judge API key (default %(default)s)")  # fmt: skip
    judge.add_argument("--judge-undecided-score", type=float, choices=sorted(TIERS.values()),
                       help="reference backend: score its abstentions with this tier "
                       "instead of leaving them out")  # fmt: skip

    gen = parser.add_argument_group("generation")
    gen.add_argument("--batch-size", type=int, default=16, help="prompts generated together (default %(default)s)")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="token budget per answer (default %(default)s)")
    gen.add_argument("--sample", action="store_true",
                     help="sample with the model card's settings (temperature 1.0, top_p 0.95, top_k 20) "
                     "instead of greedy decoding")  # fmt: skip
    gen.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (default %(default)s)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bars")


# ---- pure option handling -----------------------------------------------------------------------------------------
def default_name(model: str, adapter: str | None) -> str:
    """A row label: the adapter folder's name, else the model's folder name, else the model id.

    >>> default_name("tiny", "runs/tiny/sft/"), default_name("/models/qwen-base", None), default_name("Qwen/X", None)
    ('sft', 'qwen-base', 'Qwen/X')
    """
    if adapter:
        return Path(adapter).name or adapter
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        return Path(model).name or model
    return model


def resolve_models(models: list[str] | None, adapters: list[str] | None, names: list[str] | None
                   ) -> list[tuple[str, str, str | None]]:  # fmt: skip
    """Pair ``--model``/``--adapter``/``--name`` into ``(name, model, adapter)``; ``ValueError`` names the flag.

    >>> resolve_models(None, ["none", "runs/sft"], None)
    [('tiny', 'tiny', None), ('sft', 'tiny', 'runs/sft')]
    """
    models = models or ["tiny"]
    adapters = [None if a.strip().lower() in NO_ADAPTER else a for a in adapters] if adapters else None
    if adapters is None:
        adapters = [None] * len(models)
    elif len(models) == 1:
        models = models * len(adapters)
    elif len(adapters) != len(models):
        raise ValueError(f"--adapter is given {len(adapters)} times but --model {len(models)} times; give one "
                         "--adapter per --model (`none` for no adapter) or a single --model")  # fmt: skip
    if names is not None and len(names) != len(models):
        raise ValueError(f"--name is given {len(names)} times for {len(models)} model(s); give one per model")
    labels = names or _unique([default_name(m, a) for m, a in zip(models, adapters, strict=True)])
    if len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
        raise ValueError(f"--name values must be unique and non-empty, got {labels}")
    return list(zip(labels, models, adapters, strict=True))


def _unique(labels: list[str]) -> list[str]:
    """``["sft", "sft"]`` -> ``["sft", "sft (2)"]``."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def judge_config_from_args(args: argparse.Namespace) -> JudgeConfig:
    """The :class:`JudgeConfig` the ``--judge-*`` options describe."""
    if args.judge_backend == "local" and not args.judge_model:
        raise ValueError("--judge-backend local needs --judge-model (the name the local server serves)")
    if args.judge_concurrency < 1:
        raise ValueError(f"--judge-concurrency must be >= 1 (got {args.judge_concurrency})")
    if args.judge_undecided_score is not None and args.judge_backend != "reference":
        raise ValueError("--judge-undecided-score only applies to --judge-backend reference")
    return JudgeConfig(
        backend=args.judge_backend,
        base_url=args.judge_base_url,
        model=args.judge_model or JudgeConfig.model,
        api_key_env=args.api_key_env,
        concurrency=args.judge_concurrency,
        cache_path=str(args.judge_cache) if args.judge_cache else None,
        reference_undecided_score=args.judge_undecided_score,
    )


def check_args(args: argparse.Namespace) -> None:
    """Option values that are wrong before anything runs."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (got {args.limit})")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")


# ---- checks and data that touch files -----------------------------------------------------------------------------
def check_paths(models: list[tuple[str, str, str | None]]) -> None:
    """Adapters must be PEFT folders; a model that looks like a path must exist."""
    for _, model, adapter in models:
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise ValueError(f"--adapter {adapter}: not a folder with adapter_config.json")
        looks_local = model.startswith(("/", ".", "~")) or model.count("/") > 1
        if looks_local and not Path(model).expanduser().exists():
            raise ValueError(f"--model {model}: no such folder")


def open_records(data: str | None, models: list[tuple[str, str, str | None]]) -> tuple[list[dict], str]:
    """The open-ended records and where they came from (see the module help for the defaults)."""
    from medgspo.data.records import BUNDLED_DATA, load_records, train_eval_split

    if data:
        return load_records(data).records, data
    for _, _, adapter in models:
        split = Path(adapter) / "eval_split.jsonl" if adapter else None
        if split is not None and split.is_file():
            return load_records(split).records, str(split)
    from medgspo.train.configs import DataArguments

    defaults = DataArguments()
    _, held = train_eval_split(load_records(BUNDLED_DATA).records, defaults.eval_size, defaults.split_seed)
    return held, f"{BUNDLED_DATA} (held-out split: eval_size={defaults.eval_size}, seed={defaults.split_seed})"


# ---- the command --------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Run ``medgspo eval``; returns the exit code (one-line messages, never tracebacks, for user errors)."""
    from medgspo.data.records import DataError

    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        check_args(args)
        models = resolve_models(args.model, args.adapter, args.name)
        check_paths(models)
        gen = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "do_sample": args.sample,
               "seed": args.seed, "show_progress": not args.no_progress}  # fmt: skip
        if args.task == "mcq":
            table, outputs = _run_mcq(args, models, gen)
        else:
            table, outputs = _run_open(args, models, gen)
    except DataError as err:
        more = f" (and {len(err.problems) - 1} more problem(s))" if len(err.problems) > 1 else ""
        return _error(f"{err.problems[0]}{more}" if err.problems else str(err), 2)
    except JudgeFatalError as err:
        return _error(str(err), 3)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except (OSError, ValueError) as err:
        logger.debug("eval failed", exc_info=True)
        return _error(_first_line(err), 2)
    _say("\n" + table + "\n")
    for label, path in outputs:
        _say(f"{label:<12} {path}")
    return 0


def _run_open(args: argparse.Namespace, models: list, gen: dict[str, Any]) -> tuple[str, list[tuple[str, Path]]]:
    from medgspo.eval.metrics import markdown_table
    from medgspo.eval.open_ended import question_and_reference, run_eval

    config = judge_config_from_args(args)
    records, source = open_records(args.data, models)
    records = records[: args.limit] if args.limit else records
    for i, record in enumerate(records):
        question_and_reference(record, i)  # fail before any model loads
    logger.info("Open-ended evaluation of %d model(s) on %d question(s) from %s", len(models), len(records), source)
    summaries = run_eval(models, records, config, args.output_dir, **gen)
    out = args.output_dir
    files = [("generations", out / "generations.jsonl"), ("summaries", out / "eval.json"),
             ("table", out / "eval.md"), ("plot", out / "eval.png")]  # fmt: skip
    return markdown_table(summaries), files


def _run_mcq(args: argparse.Namespace, models: list, gen: dict[str, Any]) -> tuple[str, list[tuple[str, Path]]]:
    from medgspo.eval.mcq import load_mcq, run_mcq
    from medgspo.eval.metrics import mcq_markdown_table

    loaded = load_mcq(args.data, args.mcq_layout)
    items = loaded.items[: args.limit] if args.limit else loaded.items
    logger.info("Multiple-choice evaluation of %d model(s) on %d item(s) from %s (%s layout; %d multi-answer "
                "skipped)", len(models), len(items), loaded.source, loaded.layout, loaded.skipped_multi)  # fmt: skip
    summaries = run_mcq(models, items, args.output_dir, **gen)
    out = args.output_dir
    files = [("generations", out / "mcq_generations.jsonl"), ("summaries", out / "mcq.json"),
             ("table", out / "mcq.md")]  # fmt: skip
    return mcq_markdown_table(summaries), files


def _first_line(err: BaseException) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0]


def _say(text: str) -> None:
    print(text)  # noqa: T201


def _error(message: str, code: int) -> int:
    print(f"medgspo eval: error: {message}", file=sys.stderr)  # noqa: T201
    return code
