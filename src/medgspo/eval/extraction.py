"""The strict answer-letter rule of the multiple-choice evaluation (pure; no models, no files).

    >>> extract_choice("我想答案是A</think>\\n\\n答案：Ｃ")
    'C'

:func:`extract_choice` reads the first commitment in a final answer and returns its letter, or ``None``;
:func:`choice_from_completion` applies it to a whole completion (the thinking never counts). The rule is written
out in :func:`extract_choice`'s docstring and in ``docs/evaluation.md``; :mod:`medgspo.eval.mcq` scores with it.
"""

from __future__ import annotations

import re
import unicodedata

from medgspo.data.chat_format import THINK_CLOSE, split_completion

# A letter group: capital letters joined directly (BC) or by 、/和/与/及/或/and/or; a comma joins the next letter
# only when that letter ends the phrase ("A,C" or "A，C。" but not "B，C选项错误"). A group never touches other
# ASCII letters, so "ACEI" and "CT" are words, not answers, and it is not followed by a lowercase word ("A patient").
_JOIN = r"\s*(?:[、/&和与及或]|\band\b|\bor\b)\s*"
_COMMA_TAIL = r"(?=\s*(?:$|[,，、。.;；!！?？)）\]】」*]|和|与|及|或))"
_GROUP = (
    rf"(?<![A-Za-z])(?P<group>[A-Z](?:[A-Z]|{_JOIN}[A-Z]|\s*[,，]\s*[A-Z]{_COMMA_TAIL})*)"
    rf"(?![A-Za-z])(?!\s+[a-z])(?!{_JOIN}[A-Z])(?!\s*[,，]\s*[A-Z]{_COMMA_TAIL})"  # maximal: no backtracking to "A、B"
)
_OPEN = r"[\s*_\"'“‘(\[（【「]*"
_KEYWORD = re.compile(
    r"(?:(?:正确|最佳|标准|参考|最终)?答案(?:应该|应当|应|就)?(?:是|为|选择|选)?"
    r"|正确(?:的)?选项(?:应该|应当|应)?(?:是|为)?"
    r"|选择?(?!项)"
    r"|(?i:(?:the\s+)?(?:(?:correct|final|best|right)\s+)?answer(?:\s+(?:is|would\s+be|should\s+be))?"
    r"|(?:correct|best|right)\s+(?:option|choice)(?:\s+is)?))"
    rf"\s*[:=]?{_OPEN}{_GROUP}"
)
# At the very start: "B", "B.", "B、", "(B)", "【B】", "**B**", "B 右冠状动脉"; not "A项错误" or "A、B均错误".
_LEADING = re.compile(
    rf"^[\s*_#>\-]*[(\[（【「]?{_GROUP}(?!\s*(?:项|选项|均|都|皆))"
    r"(?=\s*$|\s*[.．、:：)）\]】」,，。;；!！*]|\s+(?![A-Za-z]))"
)
# Bold anywhere: "**B**", "**(B)**", "**B. 右冠状动脉**".
_BOLD = re.compile(rf"\*\*\s*[(\[（【]?{_GROUP}[)\]）】]?\s*(?:[.．、:：]\s*[^*\n]*)?\*\*")
_NEGATION = re.compile(r"[不非勿别未没]")


def _commitments(text: str) -> list[tuple[int, str]]:
    """Every ``(position, letter group)`` that reads as a commitment, in text order."""
    found = []
    for pattern in (_LEADING, _KEYWORD, _BOLD):
        for match in pattern.finditer(text):
            if pattern is _KEYWORD and _NEGATION.search(text[max(0, match.start() - 2) : match.start()]):
                continue  # 不选A, 不应选A
            found.append((match.start(), match.group("group")))
    return sorted(found)


def extract_choice(answer_text: str, letters: str = "ABCDE") -> str | None:
    """The option letter the answer commits to first, or ``None``.

    Strict rule: only the final answer is read (text after the last ``</think>`` when one is present); full-width
    characters are normalised (NFKC). A *commitment* is a capital letter group (1) at the very start (``B``,
    ``B.``, ``B、``, ``(B)``, ``【B】``, ``**B**``, ``B 右冠状动脉``), (2) after an answer phrase (``答案是B``,
    ``答案：B``, ``选B``, ``应选B``, ``正确选项为：B``, ``The answer is B``), or (3) in bold anywhere (``**B**``).
    The earliest commitment decides: when it names several letters (``B和C``, ``BC``, ``A、B``) the result is
    ``None``; later statements are never consulted. Not commitments: capitals that are not all option letters
    (``ACEI``, ``CT``, ``X线``), a letter followed by a lowercase word (``A patient``), option echoes (``A项错误``,
    ``选项B``, ``A、B均错误``), lowercase letters and negated phrases (``不选A``, ``答案不是A``).

    >>> extract_choice("答案是B。"), extract_choice("选项A错误，故应选C。"), extract_choice("**D**")
    ('B', 'C', 'D')
    >>> extract_choice("答案：B和C"), extract_choice("A项错误"), extract_choice("我想答案是A</think>\\n\\n答案：Ｅ")
    (None, None, 'E')
    """
    if THINK_CLOSE in answer_text:
        answer_text = answer_text.rpartition(THINK_CLOSE)[2]
    text = unicodedata.normalize("NFKC", answer_text).strip()
    for _, group in _commitments(text):
        chosen = set(re.findall(r"[A-Z]", group))
        if not chosen <= set(letters):
            continue  # capitals that are not option letters: a word or an abbreviation (ACEI, CT, X线)
        return chosen.pop() if len(chosen) == 1 else None
    return None


def choice_from_completion(completion: str, letters: str = "ABCDE") -> tuple[str | None, str, bool]:
    """``(choice, answer_text, well_formed)`` of a full completion: the choice is read from the answer only, so a
    completion with no ``</think>`` (all thinking) has no choice.

    >>> choice_from_completion("也许是A……\\n</think>\\n\\n答案：C")
    ('C', '答案：C', True)
    """
    split = split_completion(completion)
    return (extract_choice(split.answer, letters) if split.answer else None), split.answer, split.well_formed
