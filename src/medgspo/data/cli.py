"""The data commands: ``medgspo data check PATH`` and ``medgspo tiny-model --output DIR``.

medgspo data check data/medical_o1_zh.jsonl                  # statistics, or every problem as file:line: field
medgspo data check my_data/ --skip_invalid --model tiny --max_length 2048
medgspo tiny-model --output runs/tiny-qwen3.5
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from medgspo.utils.cli import Command


@dataclass
class CheckArguments:
    """How ``medgspo data check`` reads and reports a dataset."""

    skip_invalid: bool = field(default=False, metadata={"help": "Report problems but count valid records anyway."})
    model: str | None = field(
        default=None, metadata={"help": "Tokenizer to count tokens with (folder, Hub id, `tiny`)."}
    )
    max_length: int = field(default=2048, metadata={"help": "Token limit checked with --model."})
    json: bool = field(default=False, metadata={"help": "Print the statistics as JSON."})


@dataclass
class TinyModelArguments:
    """Where the tiny model goes and what its tokenizer is trained on."""

    output: str = field(metadata={"help": "Folder to write the model to."})
    data: str | None = field(default=None, metadata={"help": "Records to train the tokenizer on (default: bundled)."})


def run_check(args: CheckArguments, positionals) -> int:
    """Validate ``positionals.path``; exit 0 with statistics, or 1 with every problem listed."""
    from medgspo.data.records import DataError, describe, format_stats, load_records

    try:
        report = load_records(positionals.path, skip_invalid=True)
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
    from medgspo.data.lengths import token_counter
    from medgspo.data.tiny_model import resolve_model_path

    count = token_counter(AutoTokenizer.from_pretrained(resolve_model_path(model)), ChatFormat())
    return sum(count(r) > max_length for r in records)


def run_tiny_model(args: TinyModelArguments) -> int:
    """Build the tiny model into ``--output``."""
    from medgspo.data.records import load_records
    from medgspo.data.tiny_model import create_tiny_model

    records = load_records(args.data).records if args.data else None
    print(f"Tiny Qwen3.5 model: {create_tiny_model(args.output, records)}")
    return 0


COMMANDS = [
    Command(
        "data",
        (CheckArguments,),
        run_check,
        "Validate a dataset without training: statistics, or every problem as `file:line: field: message`.",
        positionals=(
            ("action", {"choices": ["check"], "help": "What to do with the data (`check`)."}),
            ("path", {"help": "A .jsonl/.json/.parquet file, a folder of them, or a Hub dataset id."}),
        ),
    ),
    Command("tiny-model", (TinyModelArguments,), run_tiny_model, "Build the tiny Qwen3.5-architecture model."),
]
