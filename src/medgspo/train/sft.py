"""Stage 1: supervised fine-tuning for format alignment, on TRL's ``SFTTrainer`` with a LoRA adapter.

Each record becomes a conversational prompt-completion example whose completion is
``<think>\\n{Complex_CoT}\\n</think>\\n\\n{Response}``; the loss falls on the assistant turn only. The model card's
settings: LoRA r=16, alpha=32 on q/k/v/o/gate/up/down projections, max length 2048.

Run: ``medgspo sft --config recipes/tiny/sft.yaml`` (add ``--resume`` to continue a killed run).
Output: a PEFT adapter folder (``PeftModel.from_pretrained`` loads it) with the tokenizer, ``chat_format.json``,
the held-out split ``eval_split.jsonl`` and ``sft_summary.json`` beside it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat
from medgspo.data.records import describe, fit_length, load_records, train_eval_split
from medgspo.train.configs import DataArguments, FormatArguments, MedModelConfig, MedSFTConfig, validate_common
from medgspo.utils.io import write_jsonl

logger = logging.getLogger(__name__)

EVAL_SPLIT_FILE = "eval_split.jsonl"
SUMMARY_FILE = "sft_summary.json"


@dataclass
class SFTResult:
    """Where the adapter is and what training did."""

    output_dir: Path
    summary: dict[str, Any]


def save_chat_files(folder: Path, chat_format: ChatFormat, tokenizer: Any) -> None:
    """What an adapter folder needs besides the weights to be used alone: ``chat_format.json`` and the tokenizer."""
    chat_format.save(folder)
    tokenizer.save_pretrained(folder)


def make_format_callback(chat_format: ChatFormat, tokenizer: Any):
    """A callback that saves the chat format and tokenizer into every checkpoint folder."""
    from transformers import TrainerCallback

    class SaveFormatCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():  # one writer under accelerate/DeepSpeed
                save_chat_files(ckpt, chat_format, tokenizer)

    return SaveFormatCallback()


def token_counter(tokenizer: Any, chat_format: ChatFormat):
    """Count the tokens of a record's full SFT conversation as the trainer will see it."""

    def count(record: dict[str, Any]) -> int:
        ex = chat_format.sft_example(record)
        ids = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    return count


def cot_truncator(tokenizer: Any):
    """Shorten a record's reasoning by ``excess`` tokens (plus a small margin), keeping its answer."""

    def truncate(record: dict[str, Any], excess: int) -> dict[str, Any]:
        ids = tokenizer(record["Complex_CoT"], add_special_tokens=False)["input_ids"]
        keep = max(0, len(ids) - excess - 8)
        return {**record, "Complex_CoT": tokenizer.decode(ids[:keep]).strip()}

    return truncate


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest *complete* ``checkpoint-N`` in ``output_dir`` (a process killed while saving leaves an incomplete
    folder behind: it has no readable ``trainer_state.json``, which the Trainer writes last, and is skipped)."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return str(folder)
        except (OSError, ValueError):
            logger.warning("Skipping incomplete checkpoint %s (interrupted while saving)", folder)
    return None


def load_split(data_args: DataArguments):
    """Load the records and split them as every stage does; return ``(load_report, train, held_out)``."""
    report = load_records(
        data_args.dataset_name,
        skip_invalid=data_args.skip_invalid,
        hub_config=data_args.dataset_config,
        hub_split=data_args.dataset_split,
    )
    train, held = train_eval_split(report.records, data_args.eval_size, data_args.split_seed)
    return report, train, held


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
        raise ValueError(f"No training records fit --max_length {max_length}; raise it or use --oversized truncate.")
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
        len(report.records), report.skipped, len(train), len(held), truncated, dropped,
    )  # fmt: skip
    return train, held, summary


def sft_model(model_args: MedModelConfig, model_path: str, training_args: MedSFTConfig) -> tuple[Any, Any]:
    """``(model, peft_config)`` for ``SFTTrainer``: a path plus TRL's LoRA config (transformers back-end), or the
    model card's Unsloth model with its LoRA already attached."""
    if model_args.backend == "unsloth":
        from medgspo.train.backends import load_unsloth, take_over_checkpointing

        checkpointing = take_over_checkpointing(training_args)
        return load_unsloth(model_args, gradient_checkpointing=checkpointing, seed=training_args.seed), None
    from trl import get_peft_config

    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "revision": model_args.model_revision,
        "dtype": model_args.dtype or "auto",
        **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}),
    }
    return model_path, get_peft_config(model_args)


def run_sft(
    data_args: DataArguments, format_args: FormatArguments, training_args: MedSFTConfig, model_args: MedModelConfig
) -> SFTResult:
    """Train the SFT adapter and save it (with tokenizer and chat format) to ``training_args.output_dir``."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from medgspo.train.backends import check_backend
    from medgspo.utils.models import resolve_model_path

    validate_common(data_args, model_args, training_args.max_length)
    check_backend(model_args.backend)
    output_dir = Path(training_args.output_dir)
    loaded = load_split(data_args)  # bad data fails here, before any model is built or loaded

    # ---- model, tokenizer and chat format ---------------------------------------------------------------------
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    chat_format = ChatFormat(system_prompt=format_args.system_prompt, enable_thinking=format_args.enable_thinking)
    model, peft_config = sft_model(model_args, model_path, training_args)

    # ---- data ---------------------------------------------------------------------------------------------------
    train, held, summary = prepare_data(data_args, loaded, tokenizer, chat_format, training_args.max_length)
    if training_args.process_index == 0:
        write_jsonl(output_dir / EVAL_SPLIT_FILE, held)
    train_ds = Dataset.from_list([chat_format.sft_example(r) for r in train])
    eval_ds = Dataset.from_list([chat_format.sft_example(r) for r in held]) if held else None

    # ---- training -----------------------------------------------------------------------------------------------
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[make_format_callback(chat_format, tokenizer)],
    )
    resume = last_checkpoint(output_dir) if training_args.resume else None
    if training_args.resume and resume is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", output_dir)
    before = trainer.evaluate() if eval_ds is not None and resume is None else {}
    result = trainer.train(resume_from_checkpoint=resume)
    after = trainer.evaluate() if eval_ds is not None else {}

    # ---- save ---------------------------------------------------------------------------------------------------
    trainer.save_model(str(output_dir))  # every process takes part (ZeRO-3 gathers the weights), one writes
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
    if trainer.is_world_process_zero():
        save_chat_files(output_dir, chat_format, tokenizer)
        (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
        logger.info("SFT adapter saved to %s", output_dir)
    return SFTResult(output_dir, summary)
