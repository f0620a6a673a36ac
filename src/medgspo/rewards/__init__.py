"""GSPO's rewards, chosen by name: the LLM judge, the think/answer format and medical-domain guards.

A recipe lists ``reward_funcs: [judge, format, repetition]`` and TRL's ``reward_weights: [1.0, 0.5, 0.2]``
(weight 0: computed and logged, not trained on). A new reward is one function in TRL's reward signature plus one
line in :data:`REWARDS` (as open-r1's ``get_reward_funcs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medgspo.errors import ConfigError
from medgspo.judge import JudgeConfig
from medgspo.rewards.format import format_reward_with_thinking
from medgspo.rewards.guards import language_guard, length_guard, repetition_guard
from medgspo.rewards.judge import ABSTAIN_SCORE, JudgeReward, judge_reward


@dataclass
class RewardArguments:
    """Which rewards GSPO trains on; their weights are TRL's ``--reward_weights`` (same order)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["judge"],
        metadata={
            "help": "Rewards by name, in the order of --reward_weights: judge, format, repetition, length, language."
        },
    )
    max_answer_chars: int = field(default=300, metadata={"help": "Answer length where the length guard starts."})
    min_think_chars: int = field(
        default=0,
        metadata={
            "help": "The format reward also asks for at least this many characters of thinking (0: any, even none)."
        },
    )
    abstain_score: float | None = field(
        default=ABSTAIN_SCORE,
        metadata={
            "help": "Judge reward of an answer the offline reference judge abstains on (default -1.0, its floor: "
            "only the format and guard rewards can lift it). null keeps None, which sits at its group's mean: a "
            "hiding place a weak policy learns to aim for. Evaluation never uses it."
        },
    )


@dataclass(frozen=True)
class RewardContext:
    """What a reward may need to be built."""

    judge_config: JudgeConfig
    max_answer_chars: int = 300
    abstain_score: float | None = ABSTAIN_SCORE
    min_think_chars: int = 0


# name -> builder of a TRL reward function
REWARDS: dict[str, Callable[[RewardContext], Callable[..., Any]]] = {
    "judge": lambda ctx: judge_reward(ctx.judge_config, abstain_score=ctx.abstain_score),
    "format": lambda ctx: format_reward_with_thinking(ctx.min_think_chars),
    "repetition": lambda ctx: repetition_guard,
    "length": lambda ctx: length_guard(ctx.max_answer_chars),
    "language": lambda ctx: language_guard,
}


def check_rewards(names: list[str], weights: list[float] | None) -> list[float]:
    """The weights for ``names`` (1.0 each when none are given); errors name the flag.

    >>> check_rewards(["judge", "format"], [1.0, 0.5]), check_rewards(["judge"], None)
    ([1.0, 0.5], [1.0])
    """
    if not names:
        raise ConfigError("--reward_funcs is empty; name at least one of " + ", ".join(REWARDS))
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ConfigError(f"--reward_funcs: unknown reward(s) {unknown}; known: {', '.join(REWARDS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--reward_funcs names a reward twice: {names}")
    if weights is None:
        return [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"--reward_weights has {len(weights)} value(s) for {len(names)} --reward_funcs {names}")
    return [float(w) for w in weights]


def get_reward_funcs(names: list[str], context: RewardContext) -> list[Callable[..., Any]]:
    """The TRL reward functions for ``names``, in order."""
    check_rewards(names, None)
    return [REWARDS[name](context) for name in names]


def find_judge(funcs: list[Any]) -> JudgeReward | None:
    """The judge reward among ``funcs`` (its stats go into metrics and summaries), if any."""
    return next((f for f in funcs if isinstance(f, JudgeReward)), None)


__all__ = [
    "ABSTAIN_SCORE",
    "REWARDS",
    "RewardArguments",
    "RewardContext",
    "check_rewards",
    "find_judge",
    "get_reward_funcs",
]
