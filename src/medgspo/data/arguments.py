"""What data a stage reads and how a record becomes a chat: ``DataArguments``, ``FormatArguments`` and the split.

Every stage that reads records (SFT, GSPO, the pipeline, evaluation's default held-out set) takes these flags, so
``--dataset_name``, ``--eval_size`` and ``--split_seed`` mean the same thing everywhere and give the same split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medgspo.data.records import LoadReport, load_records, train_eval_split

EVAL_SPLIT_FILE = "eval_split.jsonl"  # the held-out records, saved beside the SFT adapter


@dataclass
class DataArguments:
    """Where the records come from and how they are split and filtered."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Local .jsonl/.json/.parquet file or directory, or a Hub dataset id. Default: bundled data."
        },
    )
    dataset_config: str | None = field(default="zh", metadata={"help": "Hub dataset config (medical-o1: `zh`)."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split."})
    eval_size: float = field(default=0.1, metadata={"help": "Held-out fraction (< 1) or count of records."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the deterministic train/eval split."})
    skip_invalid: bool = field(
        default=False, metadata={"help": "Skip (and count) invalid records instead of failing."}
    )
    oversized: str = field(
        default="drop", metadata={"help": "Records longer than max_length: `drop` them or `truncate` their reasoning."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training records."})


@dataclass
class FormatArguments:
    """The chat format (saved as chat_format.json beside every checkpoint)."""

    system_prompt: str | None = field(default=None, metadata={"help": "Optional system turn before each question."})
    enable_thinking: bool = field(default=True, metadata={"help": "Pass enable_thinking to the chat template."})
    max_think_chars: int | None = field(
        default=None,
        metadata={
            "help": "SFT only: keep the first N characters of each record's reasoning (cut back to a clause end). "
            "The tiny CPU recipe uses it so a few-minute SFT learns question -> answer, not long reasoning."
        },
    )


def load_split(data_args: DataArguments) -> tuple[LoadReport, list[dict], list[dict]]:
    """Load the records and split them as every stage does; return ``(load_report, train, held_out)``."""
    report = load_records(
        data_args.dataset_name,
        skip_invalid=data_args.skip_invalid,
        hub_config=data_args.dataset_config,
        hub_split=data_args.dataset_split,
    )
    train, held = train_eval_split(report.records, data_args.eval_size, data_args.split_seed)
    return report, train, held
