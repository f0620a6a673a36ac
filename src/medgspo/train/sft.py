"""Stage 1: supervised fine-tuning for format alignment, on TRL's ``SFTTrainer`` with a LoRA adapter.

Each record becomes a conversational prompt-completion example whose completion is
``<think>\\n{Complex_CoT}\\n</think>\\n\\n{Response}``; the loss falls on the assistant turn only. The model card's
settings: LoRA r=16, alpha=32 on q/k/v/o/gate/up/down projections, max length 2048.

Run: ``medgspo sft --config recipes/tiny/sft.yaml`` (add ``--resume`` to continue a killed run).
Output: a PEFT adapter folder (``PeftModel.from_pretrained`` loads it) with the tokenizer, ``chat_format.json``,
the held-out split ``eval_split.jsonl`` and ``sft_summary.json`` beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from medgspo.data.arguments import EVAL_SPLIT_FILE, DataArguments, FormatArguments, load_split
from medgspo.data.chat_format import ChatFormat
from medgspo.data.lengths import cot_truncator, token_counter
from medgspo.data.records import describe, fit_length
from medgspo.errors import ConfigError
from medgspo.train.callbacks import make_format_callback
from medgspo.train.configs import MedModelConfig, MedSFTConfig, validate_common
from medgspo.train.stage import finish_stage, ready_trainer, resume_point
from medgspo.utils.console import announce
from medgspo.utils.io import write_jsonl

logger = logging.getLogger(__name__)

SUMMARY_FILE = "sft_summary.json"


@dataclass
class SFTResult:
    """What the SFT stage hands on: the adapter folder, what training did, and the records it split."""

    output_dir: Path
    summary: dict[str, Any]
    held_out: list[dict] = field(default_factory=list)  # never trained on (also ``eval_split.jsonl``)
    trained: list[dict] = field(default_factory=list)  # the training records after the length filter

    @property
    def adapter(self) -> Path:
        return self.output_dir


def prepare_data(
    data_args: DataArguments, loaded: tuple, tokenizer: Any, chat_format: ChatFormat, max_length: int | None
):
    """Length-filter the loaded split (:func:`load_split`); return ``(train_records, eval_records, summary)``."""
    report, train, held = loaded
    if data_args.max_train_samples:
        train = train[: data_args.max_train_samples]
    truncated = dropped = 0
    if max_length:
        count, cut = token_counter(tokenizer, chat_format), cot_truncator(tokenizer)
        train, truncated, dropped = fit_length(train, count, max_length, data_args.oversized, cut)
    if not train:
        raise ConfigError(f"No training records fit --max_length {max_length}; raise it or use --oversized truncate.")
    summary = {
        "sources": report.sources,
        "records": len(report.records),
        "skipped_invalid": report.skipped,
        "train": len(train),
        "eval": len(held),
        "truncated_too_long": truncated,
        "dropped_too_long": dropped,
        "train_stats": describe(train),
    }
    logger.info(
        "Data: %d records (%d invalid skipped), train %d / eval %d, %d truncated and %d dropped for length",
        len(report.records),
        report.skipped,
        len(train),
        len(held),
        truncated,
        dropped,
    )
    return train, held, summary


def sft_model(model_args: MedModelConfig, model_path: str, training_args: MedSFTConfig) -> tuple[Any, Any]:
    """``(model, peft_config)`` for ``SFTTrainer``: the base model loaded the one medgspo way (TRL given a path
    would load Qwen3.5's vision-language class) plus TRL's LoRA config, or the model card's Unsloth model with its
    LoRA already attached."""
    if model_args.backend == "unsloth":
        from medgspo.train.backends import load_unsloth, take_over_checkpointing

        checkpointing = take_over_checkpointing(training_args)
        return load_unsloth(model_args, gradient_checkpointing=checkpointing, seed=training_args.seed), None
    from trl import get_peft_config

    from medgspo.modeling.loading import load_base_model

    model = load_base_model(
        model_path,
        dtype=model_args.dtype or "auto",
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )
    return model, get_peft_config(model_args)


def run_sft(
    data_args: DataArguments, format_args: FormatArguments, training_args: MedSFTConfig, model_args: MedModelConfig
) -> SFTResult:
    """Train the SFT adapter and save it (with tokenizer and chat format) to ``training_args.output_dir``."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from medgspo.modeling.tiny_model import resolve_model_path
    from medgspo.train.backends import check_backend

    validate_common(data_args, model_args, training_args.max_length)
    check_backend(model_args.backend)
    output_dir = Path(training_args.output_dir)
    loaded = load_split(data_args)  # bad data fails here, before any model is built or loaded

    # ---- model, tokenizer and chat format ---------------------------------------------------------------------
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    chat_format = ChatFormat.from_arguments(format_args)
    model, peft_config = sft_model(model_args, model_path, training_args)

    # ---- data ---------------------------------------------------------------------------------------------------
    train, held, summary = prepare_data(data_args, loaded, tokenizer, chat_format, training_args.max_length)
    if training_args.process_index == 0:
        write_jsonl(output_dir / EVAL_SPLIT_FILE, held)
    datasets = [
        Dataset.from_list([chat_format.sft_example(r) for r in part]) if part else None for part in (train, held)
    ]

    # ---- training -----------------------------------------------------------------------------------------------
    trainer = ready_trainer(sft_trainer(model, peft_config, tokenizer, chat_format, training_args, *datasets), "SFT")
    announce(f"SFT: {len(train)} records, {training_args.num_train_epochs:g} epochs -> {output_dir}")
    resume = resume_point(training_args, output_dir)
    before = trainer.evaluate() if held and resume is None else {}
    result = trainer.train(resume_from_checkpoint=resume)
    after = trainer.evaluate() if held else {}

    # ---- save ---------------------------------------------------------------------------------------------------
    summary.update(
        base_model=model_args.model_name_or_path,
        model_path=model_path,
        backend=model_args.backend,
        global_step=result.global_step,
        train_loss=result.training_loss,
        eval_loss_before=before.get("eval_loss"),
        eval_loss_after=after.get("eval_loss"),
        resumed_from=resume,
    )
    if finish_stage(trainer, output_dir, SUMMARY_FILE, summary, chat_format=chat_format, tokenizer=tokenizer):
        announce(f"SFT done: loss {result.training_loss:.3f}, adapter saved to {output_dir}")
    return SFTResult(output_dir, summary, held, train)


def sft_trainer(
    model, peft_config, tokenizer, chat_format: ChatFormat, training_args: MedSFTConfig, train_ds, eval_ds
):
    """TRL's ``SFTTrainer``, with the chat files saved into every checkpoint."""
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[make_format_callback(chat_format, tokenizer)],
    )


class SFTConfigs(NamedTuple):
    """The SFT stage's parsed flags, by name (``run_sft(*configs)``)."""

    data: DataArguments
    format: FormatArguments
    training: MedSFTConfig
    model: MedModelConfig


SFT_ARGUMENTS = (DataArguments, FormatArguments, MedSFTConfig, MedModelConfig)
