"""How TRL's ``GRPOTrainer`` slices rollouts into optimizer steps, and what follows for GSPO (pure arithmetic).

One rule decides whether GSPO's clipping can act (:func:`clipping_can_act`); ``medgspo gspo`` warns with it at
start-up and ``medgspo plan`` prints it. The tests check every figure by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def clipping_can_act(gradient_accumulation_steps: int, steps_per_generation: int | None, num_iterations: int) -> bool:
    """Whether some optimizer step uses a rollout batch after the policy moved (so ratios leave 1 and can be clipped).

    A rollout batch feeds ``steps_per_generation x num_iterations`` micro-batches; an optimizer step takes
    ``gradient_accumulation_steps`` of them. Only when the first is larger does a later step see pi != pi_old.

    >>> clipping_can_act(4, 4, 1), clipping_can_act(4, 16, 1), clipping_can_act(4, 2, 2), clipping_can_act(4, 4, 2)
    (False, True, False, True)
    """
    spg = steps_per_generation or gradient_accumulation_steps
    return spg * num_iterations > gradient_accumulation_steps


def clipping_notes(training_args: Any) -> list[str]:
    """:func:`clipping_diagnosis` for a ``GRPOConfig`` (what ``gspo`` logs and ``plan`` prints)."""
    return clipping_diagnosis(
        training_args.gradient_accumulation_steps,
        training_args.steps_per_generation,
        training_args.num_iterations,
        training_args.importance_sampling_level,
        training_args.loss_type,
    )


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
    if not clipping_can_act(gradient_accumulation_steps, spg, num_iterations):
        notes.append(
            "On-policy: every rollout batch is used for exactly one optimizer step "
            f"(steps_per_generation {spg} x num_iterations {num_iterations} <= gradient_accumulation_steps "
            f"{gradient_accumulation_steps}), so the importance ratio is exactly 1 and GSPO's clipping never acts. "
            "To make ratios move, set --steps_per_generation to a multiple of --gradient_accumulation_steps "
            "(several minibatches per rollout batch) or --num_iterations > 1 (see recipes/*/gspo-paper.yaml)."
        )
    if importance_sampling_level == "sequence" and loss_type in ("dr_grpo", "bnpo", "dapo"):
        notes.append(
            f"loss_type={loss_type!r} sums per-token terms, so at sequence level each sequence is weighted by its "
            "length rather than once per sequence as in the GSPO paper. Set --loss_type grpo to follow the paper."
        )
    return notes


@dataclass(frozen=True)
class BatchPlan:
    """How TRL's ``GRPOTrainer`` slices rollouts into optimizer steps, for ``num_processes`` processes."""

    num_processes: int
    per_device_batch: int
    gradient_accumulation_steps: int
    steps_per_generation: int
    num_generations: int
    num_iterations: int = 1
    max_completion_length: int = 0

    @property
    def effective_batch(self) -> int:
        """Completions per optimizer step, over all processes."""
        return self.per_device_batch * self.gradient_accumulation_steps * self.num_processes

    @property
    def generation_batch(self) -> int:
        """Completions sampled per rollout round, over all processes (TRL's ``generation_batch_size``)."""
        return self.per_device_batch * self.steps_per_generation * self.num_processes

    @property
    def local_rollouts(self) -> int:
        """Completions one process samples (and judges) per rollout round."""
        return self.per_device_batch * self.steps_per_generation

    @property
    def prompts_per_generation(self) -> float:
        return self.generation_batch / self.num_generations

    @property
    def optimizer_steps_per_generation(self) -> float:
        """Optimizer steps taken on one rollout batch (more than 1: the later ones are off-policy)."""
        return self.steps_per_generation * self.num_iterations / self.gradient_accumulation_steps

    @property
    def judge_calls_per_step(self) -> float:
        """Completions judged per optimizer step (each rollout is judged once, however often it is reused)."""
        return self.generation_batch / self.optimizer_steps_per_generation

    @property
    def prompts_per_step(self) -> float:
        return self.judge_calls_per_step / self.num_generations

    @property
    def rollout_tokens_per_step(self) -> float:
        """Upper bound on generated tokens per optimizer step (every completion at ``max_completion_length``)."""
        return self.judge_calls_per_step * self.max_completion_length

    def problems(self) -> list[str]:
        """Settings TRL would reject, or that leave a rollout batch partly unused."""
        out = []
        if self.num_generations < 2:
            out.append(f"num_generations={self.num_generations}: GRPO/GSPO needs at least 2 completions per prompt.")
        if self.generation_batch % self.num_generations:
            out.append(
                f"generation batch {self.generation_batch} (per_device_train_batch_size {self.per_device_batch} x "
                f"steps_per_generation {self.steps_per_generation} x {self.num_processes} processes) is not "
                f"divisible by num_generations={self.num_generations}; TRL refuses it."
            )
        if (self.steps_per_generation * self.num_iterations) % self.gradient_accumulation_steps:
            out.append(
                f"steps_per_generation x num_iterations = {self.steps_per_generation * self.num_iterations} is not a "
                f"multiple of gradient_accumulation_steps={self.gradient_accumulation_steps}: optimizer steps "
                "straddle rollout batches. Use a multiple."
            )
        return out


def batch_plan(training_args: Any, num_processes: int) -> BatchPlan:
    """The :class:`BatchPlan` of a parsed GSPO config (``steps_per_generation`` defaults to the accumulation)."""
    spg = training_args.steps_per_generation or training_args.gradient_accumulation_steps
    return BatchPlan(
        num_processes=num_processes,
        per_device_batch=training_args.per_device_train_batch_size,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        steps_per_generation=spg,
        num_generations=training_args.num_generations,
        num_iterations=training_args.num_iterations,
        max_completion_length=training_args.max_completion_length or 0,
    )


def judge_concurrency_per_process(provider_cap: int, world_size: int, local_rollouts: int) -> int:
    """Judge calls one process keeps in flight: its share of the provider's cap, and no more than it has rollouts.

    Every process judges its own rollouts at the same moment, so the job as a whole has
    ``world_size x per-process`` calls in flight; this keeps that within ``provider_cap`` (when the cap is at least
    the number of processes).

    >>> judge_concurrency_per_process(32, 1, 8)    # one GPU, 8 rollouts per round: 8 in flight
    8
    >>> judge_concurrency_per_process(32, 4, 64)   # 4 processes share a cap of 32
    8
    >>> judge_concurrency_per_process(2, 4, 64)    # cap below the process count: one call each (a warning says so)
    1
    """
    return max(1, min(local_rollouts, provider_cap // max(1, world_size)))
