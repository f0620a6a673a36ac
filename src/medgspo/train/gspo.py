"""Stage 2: GSPO (Group Sequence Policy Optimization, arXiv 2507.18071) on TRL's ``GRPOTrainer``.

GSPO is GRPO with a *sequence-level* importance ratio s_i = exp(mean_t log(pi/pi_old)) clipped per sequence:
``GRPOConfig(importance_sampling_level="sequence")``. The policy continues from the SFT adapter; the reward is the
5-tier medical judge, with any rewards of :mod:`medgspo.rewards` chosen by name (``reward_funcs``) and weighted by
TRL's ``reward_weights``.

Run: ``medgspo gspo --config recipes/tiny/gspo.yaml --sft_adapter runs/tiny/sft`` (``--resume true`` continues a
killed run; the judge cache makes sure no judgment is paid twice). :func:`run_gspo` checks the judge before any
model loads (:func:`~medgspo.judge.preflight.preflight`) unless told it is checked: the pipeline, which checked it
before its first stage, hands over the same config object with ``judge_checked=True``.

Outputs in ``output_dir``: the GSPO adapter (+ tokenizer, ``chat_format.json``), ``metrics.jsonl`` (one line per
logged step), ``plots/*.png`` and ``gspo_summary.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from medgspo.data.arguments import DataArguments, FormatArguments, load_split
from medgspo.data.chat_format import ChatFormat
from medgspo.judge.api.preflight import preflight
from medgspo.judge.config import JudgeConfig
from medgspo.modeling.tiny_model import TINY_MODEL
from medgspo.rewards import RewardArguments, check_rewards, find_judge, get_reward_funcs
from medgspo.rewards.judge import JudgeReward
from medgspo.train.batching import clipping_notes, judge_concurrency_per_process
from medgspo.train.callbacks import make_format_callback, make_metrics_callback
from medgspo.train.configs import MedGSPOConfig, MedModelConfig, validate_common
from medgspo.train.stage import finish_stage, ready_trainer, resume_point
from medgspo.utils.console import announce

logger = logging.getLogger(__name__)

SUMMARY_FILE = "gspo_summary.json"
JUDGE_CACHE_FILE = "judge_cache.sqlite"


@dataclass
class GSPOResult:
    """What the GSPO stage hands on: the adapter folder, its summary, the logged metrics and the prompts it used."""

    output_dir: Path
    summary: dict[str, Any]
    metrics: list[dict] = field(default_factory=list)  # one row per logged step (``metrics.jsonl``)
    trained: list[dict] = field(default_factory=list)  # the records whose questions were its prompts

    @property
    def adapter(self) -> Path:
        return self.output_dir


@dataclass
class Policy:
    """The model GSPO trains and what goes with it."""

    model: Any
    tokenizer: Any
    chat_format: ChatFormat
    base_path: str
    peft_config: Any = None


def run_gspo(
    data_args: DataArguments,
    format_args: FormatArguments,
    judge_config: JudgeConfig,
    reward_args: RewardArguments,
    training_args: MedGSPOConfig,
    model_args: MedModelConfig,
    *,
    judge_checked: bool = False,
) -> GSPOResult:
    """Train the GSPO adapter and save it, with metrics and plots, to ``training_args.output_dir``."""
    from datasets import Dataset

    notes = check_gspo(data_args, reward_args, training_args, model_args)
    if "judge" in reward_args.reward_funcs and not judge_checked:  # a bad key or balance stops here, before a model
        preflight(judge_config)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _, train, held = load_split(data_args)  # bad data fails here, before any model is loaded
    train = train[: training_args.max_prompts] if training_args.max_prompts else train

    policy = load_policy(model_args, format_args, training_args)
    reward_funcs = get_reward_funcs(reward_args, judge_config)
    judge = find_judge(reward_funcs)
    concurrency = share_judge_cap(judge, judge_config, training_args)
    resume = resume_point(training_args, output_dir)
    metrics_path = output_dir / "metrics.jsonl"
    if resume is None and metrics_path.exists() and training_args.process_index == 0:
        metrics_path.unlink()

    # ---- training -----------------------------------------------------------------------------------------------
    trainer = make_trainer(
        policy,
        reward_funcs,
        training_args,
        Dataset.from_list([policy.chat_format.rl_example(r) for r in train]),
        metrics_path,
        judge,
    )
    announce(
        f"GSPO: {len(train)} prompts x {training_args.num_generations} completions, {training_args.max_steps} steps, "
        f"judge {judge_config.judge_backend} -> {output_dir}"
    )
    result = trainer.train(resume_from_checkpoint=resume)

    # ---- save ---------------------------------------------------------------------------------------------------
    from medgspo.train.plots import plot_training, read_metrics

    main_process = trainer.is_world_process_zero()
    plots = plot_training(metrics_path, output_dir / "plots") if main_process else []
    summary = gspo_summary(result, policy, model_args, training_args, reward_args, judge_config, judge)
    summary.update(train_prompts=len(train), held_out=len(held), resumed_from=resume, clipping_notes=notes)
    summary.update(plots=[str(p) for p in plots], judge={**summary["judge"], "concurrency": concurrency})
    if finish_stage(
        trainer, output_dir, SUMMARY_FILE, summary, chat_format=policy.chat_format, tokenizer=policy.tokenizer
    ):
        announce(f"GSPO done: {result.global_step} steps, adapter saved to {output_dir}")
    return GSPOResult(output_dir, summary, read_metrics(metrics_path), list(train))


# ---- checks ---------------------------------------------------------------------------------------------------------
def check_gspo(
    data_args: DataArguments, reward_args: RewardArguments, training_args: MedGSPOConfig, model_args: MedModelConfig
) -> list[str]:
    """Everything that can be wrong before a model loads; returns the notes on GSPO's clipping (also logged)."""
    from medgspo.train.backends import check_backend, check_rollout_engine

    validate_common(data_args, model_args, None)
    check_backend(model_args.backend)
    check_rollout_engine(training_args, model_args.backend)
    training_args.reward_weights = check_rewards(reward_args.reward_funcs, training_args.reward_weights)
    notes = clipping_notes(training_args)
    for note in notes:
        logger.warning(note)
    return notes


# ---- policy loading -------------------------------------------------------------------------------------------------
def load_policy(model_args: MedModelConfig, format_args: FormatArguments, training_args: MedGSPOConfig) -> Policy:
    """The base model with the SFT adapter made trainable (GSPO continues it), or the bare base model with TRL's
    fresh LoRA config; with ``--backend unsloth`` the model card's Unsloth loader does both. The chat format and
    tokenizer come from the SFT adapter when there is one."""
    import torch
    from transformers import AutoTokenizer

    from medgspo.modeling.loading import load_adapter, load_base_model
    from medgspo.modeling.tiny_model import resolve_model_path

    sft_dir = training_args.sft_adapter
    chat_format = ChatFormat.load(sft_dir) if sft_dir else ChatFormat.from_arguments(format_args)
    base_path = resolve_model_path(model_args.model_name_or_path)
    if model_args.backend == "unsloth":
        from medgspo.train.backends import load_unsloth, take_over_checkpointing

        checkpointing = take_over_checkpointing(training_args)
        model = load_unsloth(
            model_args, adapter=sft_dir, gradient_checkpointing=checkpointing, seed=training_args.seed
        )
    else:
        dtype = torch.bfloat16 if training_args.bf16 else torch.float32
        model = load_base_model(base_path, dtype=dtype, revision=model_args.model_revision)
        model = load_adapter(model, sft_dir, is_trainable=True) if sft_dir else model
    training_args.chat_template_kwargs = {
        **(training_args.chat_template_kwargs or {}),
        **chat_format.chat_template_kwargs(),
    }
    peft_config = None
    if not sft_dir and model_args.use_peft:
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)
    return Policy(model, AutoTokenizer.from_pretrained(sft_dir or base_path), chat_format, base_path, peft_config)


# ---- rewards ----------------------------------------------------------------------------------------------------------
def share_judge_cap(judge: JudgeReward | None, judge_config: JudgeConfig, training_args: MedGSPOConfig) -> int:
    """Give this process's judge its share of ``--judge_concurrency`` (the provider's cap for the whole job)."""
    cap, world = judge_config.judge_concurrency, training_args.world_size
    local_rollouts = training_args.per_device_train_batch_size * training_args.steps_per_generation
    per_process = judge_concurrency_per_process(cap, world, local_rollouts)
    if per_process * world > cap:
        logger.warning(
            "--judge_concurrency %d is below the %d processes: each still keeps one judge call in flight", cap, world
        )
    if judge is not None:
        judge.judge.concurrency = per_process
    return per_process


# ---- trainer ----------------------------------------------------------------------------------------------------------
def make_trainer(
    policy: Policy, reward_funcs: list, training_args: MedGSPOConfig, train_ds: Any, metrics_path: Path, judge: Any
):
    """TRL's ``GRPOTrainer`` (with our rollout switches, :mod:`medgspo.train.rollouts`), our console, the chat files in
    every checkpoint and ``metrics.jsonl``."""
    from medgspo.train.rollouts import make_trainer_class

    trainer = make_trainer_class()(
        model=policy.model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_ds,
        processing_class=policy.tokenizer,
        peft_config=policy.peft_config,
        callbacks=[
            make_format_callback(policy.chat_format, policy.tokenizer),
            make_metrics_callback(metrics_path, judge),
        ],
    )
    return ready_trainer(trainer, "GSPO")


# ---- summary ------------------------------------------------------------------------------------------------------------
def gspo_summary(
    result: Any,
    policy: Policy,
    model_args: MedModelConfig,
    training_args: MedGSPOConfig,
    reward_args: RewardArguments,
    judge_config: JudgeConfig,
    judge: JudgeReward | None,
) -> dict[str, Any]:
    """``gspo_summary.json``: what was trained from what, the rewards, the judge and GSPO's settings."""
    return {
        "base_model": model_args.model_name_or_path or TINY_MODEL,
        "model_path": policy.base_path,
        "backend": model_args.backend,
        "processes": training_args.world_size,
        "rollouts": f"vllm-{training_args.vllm_mode}" if training_args.use_vllm else "transformers",
        "sft_adapter": training_args.sft_adapter,
        "global_step": result.global_step,
        "reward_weights": dict(zip(reward_args.reward_funcs, training_args.reward_weights, strict=True)),
        "judge": judge_config.to_dict(),
        "judge_stats": judge.stats.summary(judge_config.prices) if judge else None,
        "config": {
            name: getattr(training_args, name)
            for name in (
                "importance_sampling_level",
                "loss_type",
                "epsilon",
                "epsilon_high",
                "beta",
                "num_generations",
                "steps_per_generation",
                "num_iterations",
            )
        },
    }


def default_judge_cache(judge_config: JudgeConfig, folder: str | Path) -> JudgeConfig:
    """The run's judge cache in ``folder`` unless ``--judge_cache`` names one (set once, where the config is made)."""
    if judge_config.judge_cache is None:
        judge_config.judge_cache = str(Path(folder) / JUDGE_CACHE_FILE)
    return judge_config


class GSPOConfigs(NamedTuple):
    """The GSPO stage's parsed flags, by name (``run_gspo(*configs)``)."""

    data: DataArguments
    format: FormatArguments
    judge: JudgeConfig
    rewards: Any  # RewardArguments
    training: MedGSPOConfig
    model: MedModelConfig


GSPO_ARGUMENTS = (DataArguments, FormatArguments, JudgeConfig, RewardArguments, MedGSPOConfig, MedModelConfig)
