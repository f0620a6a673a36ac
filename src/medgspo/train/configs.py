"""Training configuration: TRL's ``SFTConfig``, ``GRPOConfig`` and ``ModelConfig`` with the model card's defaults.

A recipe is a YAML file whose keys are fields of these dataclasses; any field can be overridden on the command line
(``medgspo sft --config recipes/tiny/sft.yaml --learning_rate 1e-3``), as with TRL's ``TrlParser``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, ModelConfig, SFTConfig

from medgspo.data.arguments import DataArguments
from medgspo.errors import ConfigError
from medgspo.modeling.generation import CARD_SAMPLING
from medgspo.modeling.tiny_model import TINY_MODEL

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


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


@dataclass
class MedGSPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with GSPO and the model card's defaults."""

    importance_sampling_level: str = field(default="sequence", metadata={"help": "`sequence` = GSPO."})
    loss_type: str = field(default="dr_grpo", metadata={"help": "Model card: dr_grpo. GSPO paper: grpo."})
    num_generations: int | None = field(default=4, metadata={"help": "Completions per prompt (card: 4)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Card: 2."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Card: 4 (effective batch 8)."})
    temperature: float = field(default=CARD_SAMPLING["temperature"], metadata={"help": "Rollout temperature."})
    top_p: float = field(default=CARD_SAMPLING["top_p"], metadata={"help": "Rollout top-p."})
    top_k: int = field(default=CARD_SAMPLING["top_k"], metadata={"help": "Rollout top-k."})
    multi_objective_aggregation: str = field(
        default="normalize_then_sum",
        metadata={
            "help": "Each reward is normalised per group before the weighted sum, so a failed judgment (None) "
            "sits at its group's mean instead of counting as a 0.0 judge score."
        },
    )
    sft_adapter: str | None = field(default=None, metadata={"help": "SFT adapter folder to continue from."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in output_dir."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most this many training prompts."})
    merge_adapter_for_rollouts: bool = field(
        default=False,
        metadata={"help": "transformers rollouts: merge the LoRA into the weights while generating, unmerge after."},
    )
    rollout_compile: bool = field(
        default=False,
        metadata={"help": "transformers rollouts: compile the decode step (CUDA; with cache_implementation: static)."},
    )


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
