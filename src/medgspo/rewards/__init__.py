"""GSPO's rewards, chosen by name: the LLM judge, the think/answer format and medical-domain guards.

A recipe lists ``reward_funcs: [judge, format, repetition]`` and TRL's ``reward_weights: [1.0, 0.5, 0.2]``
(weight 0: computed and logged, not trained on). Each reward is built from its arguments, as open-r1's
``get_reward_funcs`` does: ``REWARDS[name](args, judge_config)`` returns the TRL reward function.

A new reward touches two places: its function, with a small dataclass of the flags it takes, in a module of this
package, and one line in :data:`REWARDS` naming both. :data:`RewardArguments`, the flags ``gspo`` parses, is made
from the registry (``--reward_funcs`` plus every registered reward's flags), so the new flag exists at once:

    @dataclass
    class BrevityArguments:
        brevity_chars: int = field(default=120, metadata={"help": "..."})

    "brevity": Reward(BrevityArguments, lambda args, judge: brevity_reward(args.brevity_chars)),
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medgspo.errors import ConfigError
from medgspo.judge import JudgeConfig
from medgspo.rewards.format import FormatRewardArguments, format_reward_with_thinking
from medgspo.rewards.guards import LengthGuardArguments, language_guard, length_guard, repetition_guard
from medgspo.rewards.judge import ABSTAIN_SCORE, JudgeReward, JudgeRewardArguments, judge_reward

RewardFunc = Callable[..., Any]


@dataclass(frozen=True)
class Reward:
    """A registered reward: the dataclass of its flags (``None``: it takes none) and its builder."""

    arguments: type | None
    build: Callable[[Any, JudgeConfig], RewardFunc]

    def __call__(self, args: Any, judge_config: JudgeConfig) -> RewardFunc:
        """The TRL reward function, built from the parsed reward flags and the run's judge config."""
        return self.build(args, judge_config)


REWARDS: dict[str, Reward] = {
    "judge": Reward(JudgeRewardArguments, lambda args, judge: judge_reward(judge, abstain_score=args.abstain_score)),
    "format": Reward(FormatRewardArguments, lambda args, judge: format_reward_with_thinking(args.min_think_chars)),
    "repetition": Reward(None, lambda args, judge: repetition_guard),
    "length": Reward(LengthGuardArguments, lambda args, judge: length_guard(args.max_answer_chars)),
    "language": Reward(None, lambda args, judge: language_guard),
}


@dataclass
class RewardSelection:
    """Which rewards GSPO trains on; their weights are TRL's ``--reward_weights`` (same order)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["judge"],
        metadata={
            "help": "Rewards by name, in the order of --reward_weights: judge, format, repetition, length, language."
        },
    )


def reward_arguments(registry: Mapping[str, Reward]) -> type:
    """One flags dataclass: ``--reward_funcs`` and the flags of every reward in ``registry``.

    >>> sorted(f.name for f in dataclasses.fields(reward_arguments(REWARDS)))
    ['abstain_score', 'max_answer_chars', 'min_think_chars', 'reward_funcs']
    """
    bases = tuple(dict.fromkeys(r.arguments for r in registry.values() if r.arguments is not None))
    made = dataclasses.make_dataclass("RewardArguments", [], bases=(*reversed(bases), RewardSelection))
    made.__doc__ = "The rewards GSPO trains on (``--reward_funcs``) and the flags each of them takes."
    made.__module__ = __name__
    return made


RewardArguments = reward_arguments(REWARDS)


def check_rewards(
    names: list[str], weights: list[float] | None, registry: Mapping[str, Reward] = REWARDS
) -> list[float]:
    """The weights for ``names`` (1.0 each when none are given); errors name the flag.

    >>> check_rewards(["judge", "format"], [1.0, 0.5]), check_rewards(["judge"], None)
    ([1.0, 0.5], [1.0])
    """
    if not names:
        raise ConfigError("--reward_funcs is empty; name at least one of " + ", ".join(registry))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"--reward_funcs: unknown reward(s) {unknown}; known: {', '.join(registry)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--reward_funcs names a reward twice: {names}")
    if weights is None:
        return [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"--reward_weights has {len(weights)} value(s) for {len(names)} --reward_funcs {names}")
    return [float(w) for w in weights]


def get_reward_funcs(
    args: Any, judge_config: JudgeConfig, registry: Mapping[str, Reward] = REWARDS
) -> list[RewardFunc]:
    """The TRL reward functions ``args.reward_funcs`` names, in order, each built from ``args``."""
    check_rewards(args.reward_funcs, None, registry)
    return [registry[name](args, judge_config) for name in args.reward_funcs]


def find_judge(funcs: list[Any]) -> JudgeReward | None:
    """The judge reward among ``funcs`` (its stats go into metrics and summaries), if any."""
    return next((f for f in funcs if isinstance(f, JudgeReward)), None)


__all__ = [
    "ABSTAIN_SCORE",
    "REWARDS",
    "Reward",
    "RewardArguments",
    "check_rewards",
    "find_judge",
    "get_reward_funcs",
    "reward_arguments",
]
