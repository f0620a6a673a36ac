"""The ``medgspo`` command line: one entry point, one sub-command per stage.

    medgspo pipeline                      # the main job on the embedded default (tiny model, bundled data)
    medgspo sft --config recipes/tiny/sft.yaml [--field value ...]
    medgspo data check data/medical_o1_zh.jsonl
    medgspo tiny-model --output runs/tiny-qwen3.5
    medgspo judge --input in.jsonl --output out.jsonl --backend reference
    medgspo plan --config recipes/qwen3.5-4b-medical/gspo.yaml --num_processes 4

Heavy libraries (torch, transformers, TRL) are imported inside the commands, so ``medgspo --help`` is instant.
User mistakes (bad data, bad flags) end with a one-line ``error:`` message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from medgspo import __version__
from medgspo.utils.paths import RECIPES

logger = logging.getLogger("medgspo")

TINY_SFT_RECIPE = RECIPES / "tiny" / "sft.yaml"
TINY_GSPO_RECIPE = RECIPES / "tiny" / "gspo.yaml"

# Sub-commands implemented in their own module as add_arguments(parser) + run(args) -> int.
MODULE_COMMANDS = [
    ("judge", "judge.cli", "Score answers with the 5-tier medical judge (LLM API or offline)."),
    ("eval", "eval.cli", "Evaluate models: judge-scored open questions or multiple-choice accuracy."),
    ("chat", "serve.chat", "Ask a question; streams the thinking and the answer (no question: interactive)."),
    ("serve", "serve.server", "OpenAI-compatible API and web page for a model (http://127.0.0.1:8000)."),
    ("export", "serve.export", "Merge a LoRA adapter into its base model; save a standalone folder."),
]

# Sub-commands whose flags are the fields of TRL-style dataclasses; their argv goes to TrlParser unchanged.
RECIPE_COMMANDS = {
    "sft": "Stage 1: supervised fine-tuning (LoRA) on TRL's SFTTrainer. Flags: any recipe field, e.g. --config FILE.",
    "gspo": "Stage 2: GSPO on TRL's GRPOTrainer with the judge reward. Flags: any recipe field, e.g. --config FILE.",
    "pipeline": "The main job: tiny model -> SFT -> GSPO with the judge -> evaluation of base/SFT/GSPO -> report.md.",
    "plan": "Print what a recipe will do: batch arithmetic, judge calls and cost per 1,000 steps, clipping, memory. "
    "Flags: --config FILE [--num_processes N] [any recipe field].",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; recipe commands only declare themselves (TrlParser parses their flags)."""
    parser = argparse.ArgumentParser(prog="medgspo", description="Chinese medical reasoning with SFT + GSPO on TRL.")
    parser.add_argument("--version", action="version", version=f"medgspo {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only warnings and errors in the log.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in RECIPE_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)

    data = sub.add_parser("data", help="Inspect and validate datasets.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_sub.add_parser("check", help="Validate a file without training; print statistics or every problem.")
    check.add_argument("path", help="A .jsonl/.json/.parquet file, a directory of them, or a Hub dataset id.")
    check.add_argument("--skip-invalid", action="store_true", help="Report problems but count valid records anyway.")
    check.add_argument("--model", help="Tokenizer to count tokens with (folder, Hub id or `tiny`).")
    check.add_argument("--max-length", type=int, default=2048, help="Token limit checked with --model (default 2048).")
    check.add_argument("--json", action="store_true", help="Print the statistics as JSON.")

    tiny = sub.add_parser("tiny-model", help="Build the tiny Qwen3.5-architecture model and tokenizer.")
    tiny.add_argument("--output", required=True, help="Folder to write the model to.")
    tiny.add_argument("--data", help="Records to train the tokenizer on (default: the bundled data).")

    for name, module, help_text in MODULE_COMMANDS:
        add_arguments = importlib.import_module(f"medgspo.{module}").add_arguments
        add_arguments(sub.add_parser(name, help=help_text))
    return parser


# ---- commands ---------------------------------------------------------------------------------------------------
def with_default_recipe(argv: list[str], recipe: Path = TINY_SFT_RECIPE) -> list[str]:
    """Use the tiny CPU recipe unless the user gave ``--config``."""
    if "--config" in argv or any(a.startswith("--config=") for a in argv):
        return argv
    return ["--config", str(recipe), *argv]


def _main_process() -> bool:
    """False in the other processes of a torchrun/accelerate launch (they stay quiet; the main one reports)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def cmd_sft(argv: list[str]) -> int:
    from medgspo.train.configs import DataArguments, FormatArguments, MedModelConfig, MedSFTConfig, parse
    from medgspo.train.sft import run_sft

    argv = with_default_recipe(argv)
    data_args, format_args, training_args, model_args = parse(
        (DataArguments, FormatArguments, MedSFTConfig, MedModelConfig), argv, prog="medgspo sft"
    )
    result = run_sft(data_args, format_args, training_args, model_args)
    if not _main_process():
        return 0
    print(f"\nSFT adapter: {result.output_dir}")
    print(f"Summary:     {result.output_dir / 'sft_summary.json'}")
    return 0


def cmd_gspo(argv: list[str]) -> int:
    from medgspo.train.gspo import parse_gspo, run_gspo

    result = run_gspo(*parse_gspo(with_default_recipe(argv, TINY_GSPO_RECIPE)))
    if not _main_process():
        return 0
    print(f"\nGSPO adapter: {result.output_dir}")
    print(f"Metrics:      {result.output_dir / 'metrics.jsonl'}")
    for plot in result.summary["plots"]:
        print(f"Plot:         {plot}")
    return 0


def cmd_plan(argv: list[str]) -> int:
    from medgspo.train.plan import run_plan

    print("\n".join(run_plan(with_default_recipe(argv, TINY_GSPO_RECIPE))))
    return 0


def cmd_pipeline(argv: list[str]) -> int:
    from medgspo.pipeline import run_pipeline

    report = run_pipeline(argv)
    if report.samples:
        sample = report.samples[0]
        print(f"\nQuestion:  {sample['question']}\nReference: {sample['reference']}")
        for name, title in (("base", "before SFT (base model)"), ("sft", "after SFT"), ("gspo", "after GSPO")):
            if name in sample:
                print(f"\n--- {title} ---\n{sample[name]['completion'][:400]}")
    print(f"\nDone. Adapter: {report.adapter_dir}")
    print(f"Report:        {report.report_path}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from medgspo.data.records import DataError, describe, format_stats, load_records

    try:
        report = load_records(args.path, skip_invalid=True)
    except DataError as err:  # nothing valid at all
        for problem in err.problems:
            print(problem)
        print(f"\nINVALID: {len(err.problems)} problem(s), no valid records.", file=sys.stderr)
        return 1
    stats = describe(report.records)
    if args.model:
        stats["over_max_length"] = _count_oversized(report.records, args.model, args.max_length)
    for problem in report.problems:
        print(problem)
    print(json.dumps(stats, ensure_ascii=False, indent=2) if args.json else format_stats(stats))
    if args.model:
        print(f"\nrecords over {args.max_length} tokens: {stats['over_max_length']}")
    if report.problems and not args.skip_invalid:
        print(f"\nINVALID: {len(report.problems)} problem(s) in {report.skipped} record(s).", file=sys.stderr)
        return 1
    print(f"\nOK: {len(report.records)} valid record(s) in {', '.join(report.sources)}")
    return 0


def _count_oversized(records: list[dict], model: str, max_length: int) -> int:
    from transformers import AutoTokenizer

    from medgspo.data.chat_format import ChatFormat
    from medgspo.train.sft import token_counter
    from medgspo.utils.models import resolve_model_path

    count = token_counter(AutoTokenizer.from_pretrained(resolve_model_path(model)), ChatFormat())
    return sum(count(r) > max_length for r in records)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from medgspo.data.records import load_records
    from medgspo.data.tiny_model import create_tiny_model

    records = load_records(args.data).records if args.data else None
    path = create_tiny_model(args.output, records)
    print(f"Tiny Qwen3.5 model: {path}")
    return 0


def _module_runner(module: str, args: argparse.Namespace) -> Callable[[], int]:
    return lambda: importlib.import_module(f"medgspo.{module}").run(args)


# ---- entry point ------------------------------------------------------------------------------------------------
def _user_errors() -> tuple[type[BaseException], ...]:
    from medgspo.data.records import DataError
    from medgspo.train.configs import ConfigError
    from medgspo.utils.models import AdapterMismatchError

    return (DataError, ConfigError, AdapterMismatchError, FileNotFoundError, NotADirectoryError)


def main(argv: list[str] | None = None) -> int:
    """Run ``medgspo``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if rest and args.command not in RECIPE_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    commands: dict[str, Callable[[], int]] = {
        "sft": lambda: cmd_sft(rest),
        "gspo": lambda: cmd_gspo(rest),
        "pipeline": lambda: cmd_pipeline(rest),
        "plan": lambda: cmd_plan(rest),
        "data": lambda: cmd_data_check(args),
        "tiny-model": lambda: cmd_tiny_model(args),
    }
    commands |= {name: _module_runner(module, args) for name, module, _ in MODULE_COMMANDS}
    if args.command in ("sft", "gspo", "pipeline"):
        from medgspo.train.backends import import_unsloth_first

        import_unsloth_first(rest)
    try:
        return commands[args.command]()
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
