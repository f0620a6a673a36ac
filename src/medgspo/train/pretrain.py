"""Stage 0, for the embedded tiny model only: plain causal-LM pretraining of its random weights on the records' text.

The model card's SFT is format alignment on a base model that has read medicine already (Qwen3.5-4B). The tiny model
starts from random weights, so without this stage its SFT has to teach the facts and the format at once, and GSPO
finds little that SFT could sample but not yet say. This stage trains *all* parameters on plain text of the records
SFT will use (question, the opening of the reasoning, answer: no chat template, no thinking tags, so the base still
cannot answer in the chat format) and saves a full model folder (weights, tokenizer, chat template) that SFT, GSPO
and evaluation then take as their base.

Real checkpoints are pretrained; ``medgspo pipeline`` runs this stage only for the embedded tiny model.

Run: ``medgspo pretrain --config recipes/tiny/pretrain.yaml``, then
``medgspo sft --config recipes/tiny/sft.yaml --model_name_or_path runs/tiny/pretrain``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from medgspo.data.arguments import DataArguments, load_split
from medgspo.data.chat_format import shorten
from medgspo.errors import ConfigError
from medgspo.train.configs import MedModelConfig, MedSFTConfig
from medgspo.train.stage import finish_stage
from medgspo.utils.console import announce, use_stage_console

logger = logging.getLogger(__name__)

SUMMARY_FILE = "pretrain_summary.json"


@dataclass
class PretrainTextArguments:
    """How a record becomes pretraining text."""

    pretrain_think_chars: int | None = field(
        default=48,
        metadata={"help": "Keep the first N characters of each record's reasoning (cut back to a clause end)."},
    )


@dataclass
class PretrainResult:
    """Where the pretrained model is and what training did."""

    output_dir: Path
    summary: dict[str, Any]


def pretraining_text(record: dict[str, str], think_chars: int | None) -> str:
    """Question, the opening of the reasoning and the answer, one per line, with no chat markup.

    >>> pretraining_text({"Question": "头痛伴发热？", "Complex_CoT": "先看体征，再定诊断。", "Response": "考虑脑膜炎。"}, 6)
    '头痛伴发热？\\n先看体征，\\n考虑脑膜炎。'
    """
    parts = (record["Question"], shorten(record["Complex_CoT"], think_chars), record["Response"])
    return "\n".join(part.strip() for part in parts if part.strip())


def run_pretrain(
    data_args: DataArguments,
    text_args: PretrainTextArguments,
    training_args: MedSFTConfig,
    model_args: MedModelConfig,
) -> PretrainResult:
    """Train every parameter of the base model on plain text and save the full model to ``output_dir``."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from medgspo.modeling.loading import load_base_model
    from medgspo.modeling.tiny_model import resolve_model_path

    output_dir = Path(training_args.output_dir)
    _, train, _ = load_split(data_args)  # bad data fails here, before any model is built or loaded
    train = train[: data_args.max_train_samples] if data_args.max_train_samples else train
    if not train:
        raise ConfigError(f"No training records in {data_args.dataset_name} to pretrain on.")
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    model = load_base_model(model_path, dtype=model_args.dtype or "auto", revision=model_args.model_revision)

    training_args.dataset_text_field = "text"
    training_args.completion_only_loss = False
    texts = [pretraining_text(r, text_args.pretrain_think_chars) for r in train]
    limit = training_args.max_length
    truncated = sum(len(tokenizer(t)["input_ids"]) > limit for t in texts) if limit else 0
    dataset = Dataset.from_list([{"text": t} for t in texts])
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)
    use_stage_console(trainer, "pretrain")
    announce(
        f"Pretraining: {len(texts)} texts ({truncated} cut at {limit} tokens), "
        f"{training_args.num_train_epochs:g} epochs -> {output_dir}"
    )
    result = trainer.train()

    summary = {
        "base_model": model_args.model_name_or_path,
        "model_path": model_path,
        "records": len(train),
        "truncated_too_long": truncated,
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "final_token_accuracy": next(
            (
                row["mean_token_accuracy"]
                for row in reversed(trainer.state.log_history)
                if "mean_token_accuracy" in row
            ),
            None,
        ),
    }
    # the tokenizer with the chat template: SFT and evaluation read it from here
    if finish_stage(trainer, output_dir, SUMMARY_FILE, summary, tokenizer=tokenizer):
        announce(f"Pretraining done: loss {result.training_loss:.3f}, model saved to {output_dir}")
    return PretrainResult(output_dir, summary)


class PretrainConfigs(NamedTuple):
    """The pretraining stage's parsed flags, by name (``run_pretrain(*configs)``)."""

    data: DataArguments
    text: PretrainTextArguments
    training: MedSFTConfig
    model: MedModelConfig


PRETRAIN_ARGUMENTS = (DataArguments, PretrainTextArguments, MedSFTConfig, MedModelConfig)
