"""Medical-domain guards, usable as extra GSPO rewards: repetition, answer length, answer language.

Each guard is a pure scoring function on the final answer (the text after ``</think>``) plus a TRL reward wrapper.
They return penalties in ``[-1, 0]`` (0 = nothing wrong), so they are added with a positive weight in
``reward_weights`` next to the judge reward:

* :func:`repetition_penalty`: the share of repeated character n-grams over the whole completion (reasoning loops are
  the usual degenerate failure, and they rarely reach an answer). Chinese has no spaces, so words cannot be
  counted; repeated character 4-grams catch "腹痛腹痛腹痛..." and copied sentences alike.
* :func:`length_penalty`: grows linearly once the answer passes ``max_chars`` (the card asks for a concise answer).
* :func:`language_penalty`: the share of letters in the answer that are not Chinese (CJK) characters, above a
  tolerance for drug names and abbreviations such as "CT", "ACEI".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medgspo.data.chat_format import completion_text, split_completion

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_PUNCT_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass
class LengthGuardArguments:
    """The flag of the ``length`` guard."""

    max_answer_chars: int = field(default=300, metadata={"help": "Answer length where the length guard starts."})


def repetition_penalty(text: str, n: int = 4) -> float:
    """``-(repeated n-grams / all n-grams)`` over characters, punctuation and spaces removed.

    >>> repetition_penalty("急性阑尾炎，建议手术。")
    0.0
    >>> repetition_penalty("腹痛腹痛腹痛腹痛")  # 5 4-grams, 2 distinct: 3 repeats
    -0.6
    """
    chars = _PUNCT_SPACE.sub("", text)
    grams = [chars[i : i + n] for i in range(len(chars) - n + 1)]
    if len(grams) < 2:
        return 0.0
    repeats = sum(count - 1 for count in Counter(grams).values())
    return 0.0 - round(repeats / len(grams), 4)  # 0.0 - x: never -0.0


def length_penalty(text: str, max_chars: int = 300, ramp_chars: int | None = None) -> float:
    """0 up to ``max_chars`` characters, then linearly down to -1 at ``max_chars + ramp_chars`` (default: max_chars).

    >>> length_penalty("短答案。", max_chars=10)
    0.0
    >>> length_penalty("字" * 15, max_chars=10)
    -0.5
    """
    ramp = ramp_chars or max_chars
    over = len(text.strip()) - max_chars
    return 0.0 if over <= 0 else 0.0 - min(1.0, round(over / ramp, 4))


def language_penalty(text: str, tolerance: float = 0.3) -> float:
    """Minus the share of non-Chinese letters above ``tolerance``, scaled to [-1, 0]; an answer with no letters is 0.

    Letters are CJK characters and Latin words (a Latin word counts once, so "ACEI" weighs like one character).

    >>> language_penalty("首选ACEI类降压药。")
    0.0
    >>> language_penalty("The diagnosis is pneumonia.")
    -1.0
    """
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    if cjk + latin == 0:
        return 0.0
    share = latin / (cjk + latin)
    return -round(max(0.0, share - tolerance) / (1 - tolerance), 4) if share > tolerance else 0.0


def _answer_reward(score: Callable[[str], float], name: str) -> Callable[..., list[float]]:
    """Wrap an answer-level guard in TRL's reward signature (completions without an answer score 0 here:
    the judge and the format reward already punish them)."""

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        answers = [split_completion(completion_text(c)).answer for c in completions]
        return [score(a) if a else 0.0 for a in answers]

    reward.__name__ = name
    return reward


def _completion_reward(score: Callable[[str], float], name: str) -> Callable[..., list[float]]:
    """Wrap a guard that reads the whole completion (thinking and answer, tags removed)."""

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        splits = [split_completion(completion_text(c)) for c in completions]
        return [score(f"{s.thinking}{s.answer}") for s in splits]

    reward.__name__ = name
    return reward


repetition_guard = _completion_reward(repetition_penalty, "repetition_guard")
language_guard = _answer_reward(language_penalty, "language_guard")


def length_guard(max_answer_chars: int = 300) -> Callable[..., list[float]]:
    """The answer-length guard as a TRL reward function, starting at ``max_answer_chars``."""
    return _answer_reward(lambda a: length_penalty(a, max_answer_chars), "length_guard")
