"""Stage 2: GSPO (Group Sequence Policy Optimization, arXiv 2507.18071) on TRL's ``GRPOTrainer``.

GSPO is GRPO with a *sequence-level* importance ratio s_i = exp(mean_t log(pi/pi_old)) clipped per sequence:
``GRPOConfig(importance_sampling_level="sequence")``. The policy continues from the SFT adapter; the reward is the
5-tier medical judge (plus optional, weighted format and domain-guard rewards).

Run: ``medgspo gspo --config recipes/tiny/gspo.yaml --sft_adapter runs/tiny/sft`` (``--resume true`` continues a
killed run; the judge cache makes sure no judgment is paid twice).

Outputs in ``output_dir``: the GSPO adapter (+ tokenizer, ``chat_format.json``), ``metrics.jsonl`` (one line per
logged step), ``plots/*.png`` and ``gspo_summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from medgspo.data.chat_format import ChatFormat
from medgspo.train.configs import TINY_MODEL, DataArguments, FormatArguments, MedModelConfig, validate_common

logger = logging.getLogger(__name__)

SUMMARY_FILE = "gspo_summary.json"


# ---- configuration ----------------------------------------------------------------------------------------------
@dataclass
class MedGSPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with GSPO and the model card's defaults."""

    importance_sampling_level: str = field(default="sequence", metadata={"help": "`sequence` = GSPO."})
    loss_type: str = field(default="dr_grpo", metadata={"help": "Model card: dr_grpo. GSPO paper: grpo."})
    num_generations: int | None = field(default=4, metadata={"help": "Completions per prompt (card: 4)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Card: 2."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Card: 4 (effective batch 8)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature (card: 1.0)."})
    top_p: float = field(default=0.95, metadata={"help": "Rollout top-p (card: 0.95)."})
    top_k: int = field(default=20, metadata={"help": "Rollout top-k (card: 20)."})
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


@dataclass
class JudgeArguments:
    """The reward judge; the API key is read from ``judge_api_key_env`` and never stored."""

    judge_backend: str = field(default="reference", metadata={"help": "`openai`, `local` or `reference`."})
    judge_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL."})
    judge_model: str = field(default="deepseek-chat", metadata={"help": "Judge model name."})
    judge_api_key_env: str = field(default="DEEPSEEK_API_KEY", metadata={"help": "Env variable holding the key."})
    judge_concurrency: int = field(default=32, metadata={"help": "Concurrent judge calls (provider cap)."})
    judge_deadline_s: float = field(default=60.0, metadata={"help": "Hard deadline of one judge call."})
    judge_max_retries: int = field(default=5, metadata={"help": "Retries on 429/5xx/timeouts."})
    judge_cache: str | None = field(default=None, metadata={"help": "SQLite cache (default: output_dir)."})
    judge_price_input_per_mtok: float = field(default=0.28, metadata={"help": "USD per million input tokens."})
    judge_price_cached_input_per_mtok: float = field(default=0.028, metadata={"help": "USD, cache-hit input."})
    judge_price_output_per_mtok: float = field(default=0.42, metadata={"help": "USD per million output tokens."})

    def to_config(self, default_cache: Path | None = None):
        """The :class:`~medgspo.judge.JudgeConfig` these flags describe."""
        from medgspo.judge import JudgeConfig

        cache = self.judge_cache or (str(default_cache) if default_cache else None)
        return JudgeConfig(
            backend=self.judge_backend, base_url=self.judge_base_url, model=self.judge_model,
            api_key_env=self.judge_api_key_env, concurrency=self.judge_concurrency,
            deadline_s=self.judge_deadline_s, max_retries=self.judge_max_retries, cache_path=cache,
            price_input_per_mtok=self.judge_price_input_per_mtok,
            price_cached_input_per_mtok=self.judge_price_cached_input_per_mtok,
            price_output_per_mtok=self.judge_price_output_per_mtok,
        )  # fmt: skip


@dataclass
class RewardArguments:
    """Weights of the rewards next to the judge (0 = computed and logged, not trained on)."""

    judge_weight: float = field(default=1.0, metadata={"help": "Weight of the judge reward."})
    format_weight: float = field(default=0.0, metadata={"help": "Weight of the think/answer format reward."})
    repetition_weight: float = field(default=0.0, metadata={"help": "Weight of the repetition guard."})
    length_weight: float = field(default=0.0, metadata={"help": "Weight of the answer-length guard."})
    language_weight: float = field(default=0.0, metadata={"help": "Weight of the Chinese-answer guard."})
    max_answer_chars: int = field(default=300, metadata={"help": "Answer length where the length guard starts."})


# ---- start-up checks (pure) -------------------------------------------------------------------------------------
def clipping_diagnosis(
    gradient_accumulation_steps: int,
    steps_per_generation: int | None,
    num_iterations: int,
    importance_sampling_level: str,
    loss_type: str,
) -> list[str]:
    """Plain-language warnings about settings under which GSPO's clipping never acts or weights differ.

    With ``steps_per_generation <= gradient_accumulation_steps`` and one iteration, each rollout batch feeds exactly
    one optimizer step, so every update is on-policy: pi == pi_old, the sequence ratio is exactly 1 and the clip
    range is never reached.

    >>> clipping_diagnosis(4, 4, 1, "sequence", "grpo")[0][:40]
    'On-policy: every rollout batch is used f'
    >>> clipping_diagnosis(4, 16, 1, "sequence", "grpo")
    []
    """
    notes = []
    spg = steps_per_generation or gradient_accumulation_steps
    if num_iterations == 1 and spg <= gradient_accumulation_steps:
        notes.append(
            "On-policy: every rollout batch is used for exactly one optimizer step "
            f"(steps_per_generation={spg} <= gradient_accumulation_steps={gradient_accumulation_steps}, "
            "num_iterations=1), so the importance ratio is exactly 1 and GSPO's clipping never acts. "
            "To make ratios move, set --steps_per_generation to a multiple of --gradient_accumulation_steps "
            "(several minibatches per rollout batch) or --num_iterations > 1 (see recipes/*/gspo-paper.yaml)."
        )
    if importance_sampling_level == "sequence" and loss_type in ("dr_grpo", "bnpo", "dapo"):
        notes.append(
            f"loss_type={loss_type!r} sums per-token terms, so at sequence level each sequence is weighted by its "
            "length rather than once per sequence as in the GSPO paper. Set --loss_type grpo to follow the paper."
        )
    return notes


def reward_names(rewards: RewardArguments) -> list[tuple[str, float]]:
    """(reward name, weight) in the order the trainer receives them."""
    return [
        ("judge_reward", rewards.judge_weight),
        ("format_reward", rewards.format_weight),
        ("repetition_guard", rewards.repetition_weight),
        ("length_guard", rewards.length_weight),
        ("language_guard", rewards.language_weight),
    ]


# ---- building blocks --------------------------------------------------------------------------------------------
def format_reward_with_lengths(completions: list[Any], log_metric=None, **kwargs: Any) -> list[float]:
    """The format reward, also logging mean thinking and answer lengths (characters) of the batch."""
    from medgspo.data.chat_format import completion_text, split_completion
    from medgspo.rewards.judge import format_reward

    if log_metric is not None:
        splits = [split_completion(completion_text(c)) for c in completions]
        log_metric("answer_chars_mean", sum(len(s.answer) for s in splits) / max(len(splits), 1))
        log_metric("think_chars_mean", sum(len(s.thinking) for s in splits) / max(len(splits), 1))
    return format_reward(completions)


format_reward_with_lengths.__name__ = "format_reward"


def build_rewards(rewards: RewardArguments, judge_config) -> tuple[list[Any], list[float], Any]:
    """The reward functions and their weights for ``GRPOTrainer``; also returns the judge reward (for its stats)."""
    from medgspo.rewards.guards import guard_rewards
    from medgspo.rewards.judge import judge_reward

    judge = judge_reward(judge_config)
    guards = guard_rewards(rewards.max_answer_chars)
    funcs = {"judge_reward": judge, "format_reward": format_reward_with_lengths, **guards}
    names = reward_names(rewards)
    return [funcs[name] for name, _ in names], [weight for _, weight in names], judge


def load_policy(model_args: MedModelConfig, sft_adapter: str | None, dtype: Any, training_args: MedGSPOConfig):
    """The base model with the SFT adapter made trainable (GSPO continues it), or the bare base model (TRL then adds
    a fresh LoRA). With ``--backend unsloth`` the model card's Unsloth loader does both."""
    from transformers import AutoModelForCausalLM

    from medgspo.utils.models import load_adapter, resolve_model_path

    base_path = resolve_model_path(model_args.model_name_or_path)
    if model_args.backend == "unsloth":
        from medgspo.train.backends import load_unsloth, take_over_checkpointing

        checkpointing = take_over_checkpointing(training_args)
        model = load_unsloth(model_args, adapter=sft_adapter, gradient_checkpointing=checkpointing,
                             seed=training_args.seed)  # fmt: skip
        return model, base_path
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, revision=model_args.model_revision)
    if sft_adapter:
        model = load_adapter(model, sft_adapter, is_trainable=True)
    return model, base_path


def make_metrics_callback(path: Path, judge_reward, smoothing: float = 0.9):
    """A callback that appends every log entry (plus smoothed reward and run-level judge totals) to ``path``."""
    from transformers import TrainerCallback

    class MetricsJsonlCallback(TrainerCallback):
        def __init__(self):
            self.ema = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "train_runtime" in logs or not state.is_world_process_zero:  # one line per step, one writer
                return
            row = {"step": state.global_step, **logs}
            if "reward" in logs:  # rollout steps; the other minibatches of a rollout batch log loss and clipping
                reward = logs["reward"]
                self.ema = reward if self.ema is None else smoothing * self.ema + (1 - smoothing) * reward
                row["reward_smoothed"] = self.ema
            stats, prices = judge_reward.stats, judge_reward.judge.config.prices
            row |= {"judge_total/calls": stats.calls, "judge_total/cache_hits": stats.cache_hits,
                    "judge_total/failures": stats.failures, "judge_total/cost_usd": stats.cost(prices)}  # fmt: skip
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return MetricsJsonlCallback()


# ---- the stage --------------------------------------------------------------------------------------------------
@dataclass
class GSPOResult:
    output_dir: Path
    summary: dict[str, Any]


def run_gspo(
    data_args: DataArguments,
    format_args: FormatArguments,
    judge_args: JudgeArguments,
    reward_args: RewardArguments,
    training_args: MedGSPOConfig,
    model_args: MedModelConfig,
) -> GSPOResult:
    """Train the GSPO adapter and save it, with metrics and plots, to ``training_args.output_dir``."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from medgspo.train.backends import check_backend, check_rollout_engine
    from medgspo.train.plan import judge_concurrency_per_process
    from medgspo.train.plots import plot_training
    from medgspo.train.sft import last_checkpoint, load_split, make_format_callback, save_chat_files

    validate_common(data_args, model_args, None)
    check_backend(model_args.backend)
    check_rollout_engine(training_args, model_args.backend)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clipping_notes = clipping_diagnosis(
        training_args.gradient_accumulation_steps, training_args.steps_per_generation,
        training_args.num_iterations, training_args.importance_sampling_level, training_args.loss_type,
    )  # fmt: skip
    for note in clipping_notes:
        logger.warning(note)

    _, train, held = load_split(data_args)  # bad data fails here, before any model is loaded

    # ---- policy, tokenizer, chat format -----------------------------------------------------------------------
    sft_dir = training_args.sft_adapter
    chat_format = (
        ChatFormat.load(sft_dir)
        if sft_dir
        else ChatFormat(system_prompt=format_args.system_prompt, enable_thinking=format_args.enable_thinking)
    )
    dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    model, base_path = load_policy(model_args, sft_dir, dtype, training_args)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir or base_path)
    training_args.chat_template_kwargs = {
        **(training_args.chat_template_kwargs or {}),
        **chat_format.chat_template_kwargs(),
    }
    peft_config = None
    if not sft_dir and model_args.use_peft:
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)

    # ---- data: the same split as SFT, prompts + reference column -------------------------------------------------
    train = train[: training_args.max_prompts] if training_args.max_prompts else train
    train_ds = Dataset.from_list([chat_format.rl_example(r) for r in train])

    # ---- rewards ------------------------------------------------------------------------------------------------
    judge_config = judge_args.to_config(output_dir / "judge_cache.sqlite")
    local_rollouts = training_args.per_device_train_batch_size * training_args.steps_per_generation
    judge_config = dataclasses.replace(judge_config, concurrency=judge_concurrency_per_process(
        judge_args.judge_concurrency, training_args.world_size, local_rollouts
    ))  # fmt: skip
    if judge_config.concurrency * training_args.world_size > judge_args.judge_concurrency:
        logger.warning("--judge_concurrency %d is below the %d processes: each still keeps one judge call in flight",
                       judge_args.judge_concurrency, training_args.world_size)  # fmt: skip
    reward_funcs, weights, judge = build_rewards(reward_args, judge_config)
    training_args.reward_weights = weights
    metrics_path = output_dir / "metrics.jsonl"
    resume = last_checkpoint(output_dir) if training_args.resume else None
    if resume is None and metrics_path.exists() and training_args.process_index == 0:
        metrics_path.unlink()

    # ---- training -----------------------------------------------------------------------------------------------
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[make_format_callback(chat_format, tokenizer), make_metrics_callback(metrics_path, judge)],
    )
    result = trainer.train(resume_from_checkpoint=resume)

    # ---- save ---------------------------------------------------------------------------------------------------
    trainer.save_model(str(output_dir))  # every process takes part (ZeRO-3 gathers the weights), one writes
    main_process = trainer.is_world_process_zero()
    if main_process:
        save_chat_files(output_dir, chat_format, tokenizer)
    plots = plot_training(metrics_path, output_dir / "plots") if main_process else []
    summary = {
        "base_model": model_args.model_name_or_path or TINY_MODEL,
        "model_path": base_path,
        "backend": model_args.backend,
        "processes": training_args.world_size,
        "rollouts": f"vllm-{training_args.vllm_mode}" if training_args.use_vllm else "transformers",
        "sft_adapter": sft_dir,
        "global_step": result.global_step,
        "train_prompts": len(train),
        "held_out": len(held),
        "resumed_from": resume,
        "reward_weights": dict(reward_names(reward_args)),
        "judge": {k: v for k, v in judge_config.to_dict().items() if k != "extra_body"},
        "judge_stats": judge.stats.summary(judge_config.prices),
        "clipping_notes": clipping_notes,
        "plots": [str(p) for p in plots],
        "config": {
            "importance_sampling_level": training_args.importance_sampling_level,
            "loss_type": training_args.loss_type,
            "epsilon": training_args.epsilon,
            "epsilon_high": training_args.epsilon_high,
            "beta": training_args.beta,
            "num_generations": training_args.num_generations,
            "steps_per_generation": training_args.steps_per_generation,
            "num_iterations": training_args.num_iterations,
        },
    }
    if main_process:
        (output_dir / SUMMARY_FILE).write_text(
            json.dumps(summary, ensure_ascii=False, indent=2, default=str), encoding="utf-8"
        )
        logger.info("GSPO adapter saved to %s", output_dir)
    return GSPOResult(output_dir, summary)


def parse_gspo(argv: list[str] | None, prog: str = "medgspo gspo"):
    """Parse a GSPO recipe and overrides into the stage's dataclasses."""
    from medgspo.train.configs import parse

    return parse(
        (DataArguments, FormatArguments, JudgeArguments, RewardArguments, MedGSPOConfig, MedModelConfig), argv, prog
    )
