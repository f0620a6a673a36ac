"""The think/answer format reward: 1.0 for a well-formed completion, 0.0 otherwise (TRL's reward signature).

Well formed means one ``</think>``, at most one leading ``<think>`` and a non-empty answer after it
(:func:`medgspo.data.chat_format.split_completion`). With TRL's ``log_metric`` it also logs the batch's mean
thinking and answer lengths in characters (``think_chars_mean``, ``answer_chars_mean``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medgspo.data.chat_format import completion_text, split_completion

FORMAT_WELL_FORMED = 1.0
FORMAT_MALFORMED = 0.0


def format_reward(
    completions: list[Any], log_metric: Callable[[str, float], None] | None = None, **kwargs: Any
) -> list[float]:
    """1.0 when a completion is well formed, else 0.0. Weight it with ``GRPOConfig.reward_weights``.

    >>> format_reward(["思考。\\n</think>\\n\\n诊断为肺炎。", "只有思考", [{"role": "assistant", "content": "</think>"}]])
    [1.0, 0.0, 0.0]
    """
    splits = [split_completion(completion_text(c)) for c in completions]
    if log_metric is not None and splits:
        log_metric("answer_chars_mean", sum(len(s.answer) for s in splits) / len(splits))
        log_metric("think_chars_mean", sum(len(s.thinking) for s in splits) / len(splits))
    return [FORMAT_WELL_FORMED if s.well_formed else FORMAT_MALFORMED for s in splits]
