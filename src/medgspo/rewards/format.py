"""The think/answer format reward: 1.0 for a well-formed completion, 0.0 otherwise (TRL's reward signature).

Well formed means one ``</think>``, at most one leading ``<think>`` and a non-empty answer after it
(:func:`medgspo.data.chat_format.split_completion`); with ``min_think_chars`` the thinking must also be at least
that long, so a policy cannot shed its reasoning for free (a tiny run went from 51 to 0 thinking characters in 23
steps when only the answer was judged). With TRL's ``log_metric`` it also logs the batch's mean
thinking and answer lengths in characters (``think_chars_mean``, ``answer_chars_mean``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medgspo.data.chat_format import completion_text, split_completion

FORMAT_WELL_FORMED = 1.0
FORMAT_MALFORMED = 0.0


@dataclass
class FormatRewardArguments:
    """The flag of the ``format`` reward."""

    min_think_chars: int = field(
        default=0,
        metadata={
            "help": "The format reward also asks for at least this many characters of thinking (0: any, even none)."
        },
    )


def format_reward(
    completions: list[Any], log_metric: Callable[[str, float], None] | None = None, **kwargs: Any
) -> list[float]:
    """1.0 when a completion is well formed, else 0.0. Weight it with ``GRPOConfig.reward_weights``.

    >>> format_reward(["思考。\\n</think>\\n\\n诊断为肺炎。", "只有思考", [{"role": "assistant", "content": "</think>"}]])
    [1.0, 0.0, 0.0]
    """
    return _format_scores(completions, 0, log_metric)


def format_reward_with_thinking(min_think_chars: int = 0) -> Callable[..., list[float]]:
    """:func:`format_reward`, which also asks for at least ``min_think_chars`` of thinking (0: plain format_reward).

    >>> reward = format_reward_with_thinking(4)
    >>> reward(["先看体征再定诊断。\\n</think>\\n\\n诊断为肺炎。", "<think>\\n\\n</think>\\n\\n诊断为肺炎。"])
    [1.0, 0.0]
    """
    if min_think_chars <= 0:
        return format_reward

    def reward(
        completions: list[Any], log_metric: Callable[[str, float], None] | None = None, **kwargs: Any
    ) -> list[float]:
        return _format_scores(completions, min_think_chars, log_metric)

    reward.__name__ = "format_reward"
    return reward


def _format_scores(
    completions: list[Any], min_think_chars: int, log_metric: Callable[[str, float], None] | None
) -> list[float]:
    splits = [split_completion(completion_text(c)) for c in completions]
    if log_metric is not None and splits:
        log_metric("answer_chars_mean", sum(len(s.answer) for s in splits) / len(splits))
        log_metric("think_chars_mean", sum(len(s.thinking) for s in splits) / len(splits))
    return [
        FORMAT_WELL_FORMED if s.well_formed and len(s.thinking.strip()) >= min_think_chars else FORMAT_MALFORMED
        for s in splits
    ]
