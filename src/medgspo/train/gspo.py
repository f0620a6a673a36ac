"""Stage 2: GSPO (Group Sequence Policy Optimization, arXiv 2507.18071) on TRL's ``GRPOTrainer``.

GSPO is GRPO with a *sequence-level* importance ratio s_i = exp(mean_t log(pi/pi_old)) clipped per sequence:
``GRPOConfig(importance_sampling_level="sequence")``. The policy continues from the SFT adapter; the reward is the
5-tier medical judge, with any rewards of :mod:`medgspo.rewards` chosen by name (``reward_funcs``) and weighted by
TRL's ``reward_weights``.

Run: ``medgspo gspo --config recipes/tiny/gspo.yaml --sft_adapter runs/tiny/sft`` (``--resume true`` continues a
killed run; the judge cache makes sure no judgment is paid twice).

Outputs in ``output_dir``: the GSPO adapter (+ tokenizer, ``chat_format.json``), ``metrics.jsonl`` (one line per
logged step), ``plots/*.png`` and ``gspo_summary.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgspo.data.arguments import DataArguments, FormatArguments, load_split
from medgspo.data.chat_format import ChatFormat
from medgspo.data.tiny_model import TINY_MODEL
from medgspo.judge.arguments import JudgeArguments
from medgspo.judge.preflight import preflight
from medgspo.rewards import RewardArguments, RewardContext, check_rewards, find_judge, get_reward_funcs
from medgspo.train.batching import clipping_diagnosis, judge_concurrency_per_process
from medgspo.train.callbacks import make_format_callback, make_metrics_callback, save_chat_files
from medgspo.train.checkpoints import last_checkpoint
from medgspo.train.configs import MedGSPOConfig, MedModelConfig, validate_common
from medgspo.utils.console import announce, use_stage_console
from medgspo.utils.io import write_json

logger = logging.getLogger(__name__)

SUMMARY_FILE = "gspo_summary.json"


def load_policy(model_args: MedModelConfig, sft_adapter: str | None, dtype: Any, training_args: MedGSPOConfig):
    """The base model with the SFT adapter made trainable (GSPO continues it), or the bare base model (TRL then adds
    a fresh LoRA). With ``--backend unsloth`` the model card's Unsloth loader does both."""
    from medgspo.data.tiny_model import resolve_model_path
    from medgspo.modeling.loading import load_adapter, load_base_model

    base_path = resolve_model_path(model_args.model_name_or_path)
    if model_args.backend == "unsloth":
        from medgspo.train.backends import load_unsloth, take_over_checkpointing

        checkpointing = take_over_checkpointing(training_args)
        model = load_unsloth(
            model_args, adapter=sft_adapter, gradient_checkpointing=checkpointing, seed=training_args.seed
        )
        return model, base_path
    model = load_base_model(base_path, dtype=dtype, revision=model_args.model_revision)
    if sft_adapter:
        model = load_adapter(model, sft_adapter, is_trainable=True)
    return model, base_path


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

    from medgspo.train.backends import check_backend, check_rollout_engine, check_training_kernels, log_model_notes
    from medgspo.train.plots import plot_training

    validate_common(data_args, model_args, None)
    check_backend(model_args.backend)
    check_rollout_engine(training_args, model_args.backend)
    training_args.reward_weights = check_rewards(reward_args.reward_funcs, training_args.reward_weights)
    judge_config = judge_args.to_config(Path(training_args.output_dir) / "judge_cache.sqlite")
    if "judge" in reward_args.reward_funcs:  # a bad key, model name or balance stops here, before any model loads
        preflight(judge_args)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clipping_notes = clipping_diagnosis(
        training_args.gradient_accumulation_steps,
        training_args.steps_per_generation,
        training_args.num_iterations,
        training_args.importance_sampling_level,
        training_args.loss_type,
    )
    for note in clipping_notes:
        logger.warning(note)

    _, train, held = load_split(data_args)  # bad data fails here, before any model is loaded

    # ---- policy, tokenizer, chat format -----------------------------------------------------------------------
    sft_dir = training_args.sft_adapter
    chat_format = ChatFormat.load(sft_dir) if sft_dir else ChatFormat.from_arguments(format_args)
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
    judge_config = share_judge_cap(judge_config, training_args)
    reward_funcs = get_reward_funcs(
        reward_args.reward_funcs,
        RewardContext(
            judge_config, reward_args.max_answer_chars, reward_args.abstain_score, reward_args.min_think_chars
        ),
    )
    judge = find_judge(reward_funcs)
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
    use_stage_console(trainer, "GSPO")
    log_model_notes(trainer.model)  # what the LoRA adapts per layer kind; GPU kernels to install
    check_training_kernels(trainer.model)  # kernels that would refuse the backward pass: stop now, say why
    announce(
        f"GSPO: {len(train)} prompts x {training_args.num_generations} completions, {training_args.max_steps} steps, "
        f"judge {judge_config.backend} -> {output_dir}"
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
        "reward_weights": dict(zip(reward_args.reward_funcs, training_args.reward_weights, strict=True)),
        "judge": {k: v for k, v in judge_config.to_dict().items() if k != "extra_body"},
        "judge_stats": judge.stats.summary(judge_config.prices) if judge else None,
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
        write_json(output_dir / SUMMARY_FILE, summary)
        announce(f"GSPO done: {result.global_step} steps, adapter saved to {output_dir}")
    return GSPOResult(output_dir, summary)


def share_judge_cap(judge_config, training_args: MedGSPOConfig):
    """The judge config with this process's share of ``--judge_concurrency`` (the provider's cap for the job)."""
    cap, world = judge_config.concurrency, training_args.world_size
    local_rollouts = training_args.per_device_train_batch_size * training_args.steps_per_generation
    per_process = judge_concurrency_per_process(cap, world, local_rollouts)
    if per_process * world > cap:
        logger.warning(
            "--judge_concurrency %d is below the %d processes: each still keeps one judge call in flight", cap, world
        )
    return dataclasses.replace(judge_config, concurrency=per_process)


GSPO_ARGUMENTS = (DataArguments, FormatArguments, JudgeArguments, RewardArguments, MedGSPOConfig, MedModelConfig)
