"""Configuration dataclasses: TRL's configs extended with medgspo's data and chat-format fields.

A recipe is a YAML file whose keys are fields of these dataclasses; any field can be overridden on the command line
(``medgspo sft --config recipes/tiny/sft.yaml --learning_rate 1e-3``), as with TRL's ``TrlParser``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY_MODEL = "tiny"  # `--model_name_or_path tiny` builds (once) and uses the embedded tiny model


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


@dataclass
class MedSFTConfig(SFTConfig):
    """TRL's ``SFTConfig`` with the model card's defaults (max length 2048, loss on the assistant turn only)."""

    max_length: int | None = field(default=2048, metadata={"help": "Maximum tokens per example (model card: 2048)."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in output_dir."})


@dataclass
class MedModelConfig(ModelConfig):
    """TRL's ``ModelConfig`` with the model card's LoRA (r=16, alpha=32 on every projection)."""

    model_name_or_path: str | None = field(
        default=TINY_MODEL, metadata={"help": "Hub id or local folder; `tiny` = the embedded tiny Qwen3.5 model."}
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (the model card does)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: list(LORA_TARGETS), metadata={"help": "Modules that get LoRA adapters."}
    )
    backend: str = field(
        default="transformers",
        metadata={"help": "`transformers` (default, any machine) or `unsloth` (CUDA + `medgspo[unsloth]`)."},
    )
    max_seq_length: int = field(
        default=2048, metadata={"help": "Unsloth backend: max_seq_length given to FastVisionModel (card: 2048)."}
    )


class ConfigError(ValueError):
    """A configuration value the user must change; the message names the flag."""


def validate_common(data: DataArguments, model: ModelConfig, max_length: int | None) -> None:
    """Reject values that would fail late or silently; each message names the flag to change."""
    if data.oversized not in ("drop", "truncate"):
        raise ConfigError(f"--oversized must be 'drop' or 'truncate', got {data.oversized!r}")
    if not 0 <= data.eval_size or (data.eval_size >= 1 and data.eval_size != int(data.eval_size)):
        raise ConfigError(f"--eval_size must be a fraction in [0, 1) or a whole count, got {data.eval_size}")
    if model.use_peft and model.lora_r <= 0:
        raise ConfigError(f"--lora_r must be a positive integer, got {model.lora_r}")
    if model.use_peft and model.lora_alpha <= 0:
        raise ConfigError(f"--lora_alpha must be positive, got {model.lora_alpha}")
    if max_length is not None and max_length < 32:
        raise ConfigError(f"--max_length must be at least 32 tokens, got {max_length}")


def parse(dataclass_types: tuple, argv: list[str] | None, prog: str | None = None):
    """Parse ``--config recipe.yaml`` plus command-line overrides into the given dataclasses (TrlParser)."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=prog)
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as err:  # dataclass __post_init__ checks (transformers, TRL, ours) reject a flag value
        raise ConfigError(str(err)) from None
