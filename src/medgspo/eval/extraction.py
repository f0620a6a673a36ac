"""The strict answer-letter rule of the multiple-choice evaluation (pure; no models, no files).

    >>> extract_choice("我想答案是A</think>\\n\\n答案：$\\\\boxed{Ｃ}$")
    'C'

:func:`extract_choice` reads the first commitment in a final answer and returns its letter, or ``None``;
:func:`choice_from_completion` applies it to a whole completion (the thinking never counts). The rule:

1. Only the final answer is read: the text after the last ``</think>``; a text that opens ``<think>`` and never
   closes it is all thinking and has no answer. The text is NFKC-normalised (``Ｂ`` -> ``B``, ``：`` -> ``:``).
2. A *commitment* is a capital-letter group (``B``; ``B和C``, ``BC``, ``A、B`` name several letters) that is
   (a) at the very start (``B``, ``B.``, ``(B)``, ``【B】``, ``B 右冠状动脉``);
   (b) after an answer phrase (``答案是B``, ``答案：B``, ``【答案】B``, ``答：B``, ``选B``, ``应选B``, ``正确选项为B``,
   ``The answer is B``);
   (c) after ``是``/``为`` as a stand-alone letter (``正确的是B``, ``诊断是C（急性胰腺炎）``, ``而是E``);
   (d) a verdict on an option (``选项D是正确的``, ``D选项正确``, ``选项D描述正确``) when it is the only option the
   answer judges (``A项正确，B项错误`` is an analysis), or ``选项B`` closing a sentence;
   (e) in ``\\boxed{B}`` (also ``$\\boxed{\\text{B}}$``) or in bold (``**B**``) anywhere.
3. The earliest commitment decides. When it names several letters the answer is unread (``None``); later
   statements are never consulted (``答案为B……答案是C`` gives ``B``).
4. Not commitments, skipped: capitals that are not all option letters (``ACEI``, ``CT``, ``X线``, ``DNA``); a letter
   glued to a word (``B超``, ``A型血``, ``B12``, ``E. coli``, ``A patient``); option echoes (``A项错误``,
   ``A、B、C均错误``, ``C选项看似合理``); negated or hedged phrases (``不选A``, ``答案不是A``, ``也可能是B``);
   lowercase letters. No commitment at all (``无法确定``) is unread.

Every example of the table in ``docs/evaluation.md`` is a test, and so are 124 real answer styles
(tests/eval/test_extraction.py, tests/eval/data/answer_cases.jsonl).
"""

from __future__ import annotations

import re
import unicodedata

from medgspo.data.chat_format import THINK_CLOSE, THINK_OPEN, split_completion

# A letter group: capital letters joined directly (BC) or by 、/和/与/及/或/还是/and/or; a comma joins the next letter
# only when that letter ends the phrase ("A,C" or "A，C。" but not "B，C选项错误"). A group never touches other
# ASCII letters or digits ("ACEI", "CT", "B12" are words), is not followed by a lowercase word ("A patient",
# "E. coli") nor glued to a word that makes it a name ("B超", "A型血", "B族").
_JOIN = r"\s*(?:[、/&和与及或]|还是|\band\b|\bor\b)\s*"
_COMMA_TAIL = r"(?=\s*(?:$|[,，、。.;；!！?？)）\]】」*]|和|与|及|或))"
_GROUP = (
    rf"(?<![A-Za-z0-9])(?P<group>[A-Z](?:[A-Z]|{_JOIN}[A-Z]|\s*[,，]\s*[A-Z]{_COMMA_TAIL})*)"
    rf"(?![A-Za-z0-9])(?!\s+[a-z])(?![.．]\s*[a-z])(?![超型族组类级期群细波])"
    rf"(?!{_JOIN}[A-Z])(?!\s*[,，]\s*[A-Z]{_COMMA_TAIL})"  # maximal: no backtracking to the "A" of "A、B"
)
_OPEN = r"[\s*_\"'“‘(\[（【「]*"
# What may follow a bare letter after 是/为 or 选项: the end, punctuation, a bracket, a space, 项.
_LETTER_END = r"(?=\s*$|\s*[.．、:：)）(（\]】」,，。;；!！?？*]|\s+(?![A-Za-z])|\s*(?:项|选项))"
_ANSWER_WORD = r"(?:(?:正确|最佳|标准|参考|最终)的?)?答案"
_KEYWORD = re.compile(
    rf"(?:[【\[]\s*{_ANSWER_WORD}\s*[】\]]"
    rf"|{_ANSWER_WORD}(?:应该|应当|应|就|即)?(?:是|为|选择|选)?"
    r"|答\s*:"
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
_COPULA = re.compile(rf"(?:是|为)\s*{_OPEN}{_GROUP}{_LETTER_END}")
_VERDICT = re.compile(
    rf"(?:选项\s*)?{_GROUP}\s*(?:选项|项)?\s*(?:的)?(?:描述|说法|表述|叙述)?\s*(?:是|为)?\s*"
    r"(?:正确|对的|最符合|最佳|最合适|符合题意|当选|为正确答案|是正确答案)"
)
# Any option judged right or wrong ("A项正确", "B错误", "选项C不对"): when two letters are judged, the verdicts are an
# option-by-option analysis, not a commitment ("A项正确，B项正确，C项错误。故选C" is read at "故选C").
_JUDGED = re.compile(
    r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])\s*(?:选项|项)?\s*(?:的)?(?:描述|说法|表述|叙述)?\s*(?:是|为)?\s*"
    r"(?:也)?(?:不完全|并不|不)?(?:正确|错误|对|错)"
)
_OPTION_END = re.compile(rf"选项\s*{_GROUP}(?=\s*(?:$|[。.!！;；)）\]】」]))")
_BOXED = re.compile(
    r"\\boxed\s*\{\s*(?:\\(?:text|mathrm|textbf|mathbf|rm|bf|textrm)\s*\{\s*)?[(]?\s*"
    rf"{_GROUP}\s*[)]?\s*(?:[.:、][^{{}}]*)?\}}"
)
_BOLD = re.compile(rf"\*\*\s*[(\[（【]?{_GROUP}[)\]）】]?\s*(?:[.．、:：]\s*[^*\n]*)?\*\*")
_PATTERNS = (_LEADING, _KEYWORD, _COPULA, _VERDICT, _OPTION_END, _BOXED, _BOLD)
_NEGATION = re.compile(r"[不非勿别未没]")
# Before 是/为: a hedge or an alternative is not a commitment ("也可能是B", "还是C", "或为D"); "最可能是C" is.
_HEDGE = re.compile(r"(?:[也还或]|(?<!最)可能|或许|也许|大概)$")


def _blocked(text: str, match: re.Match) -> bool:
    """A negation just before the phrase (不选A, 不应选A, 答案不是A) or a hedge before 是/为."""
    before = text[max(0, match.start() - 2) : match.start()]
    if _NEGATION.search(before):
        return True
    return match.re is _COPULA and bool(_HEDGE.search(text[max(0, match.start() - 3) : match.start()]))


def commitments(text: str) -> list[tuple[int, str]]:
    """Every ``(position, letter group)`` of an (already normalised) answer that reads as a commitment, in order.

    >>> commitments("A项错误，故选C。答案:B和C")
    [(7, 'C'), (12, 'B和C')]
    """
    found = []
    analysis = len({m.group(1) for m in _JUDGED.finditer(text)}) > 1
    for pattern in _PATTERNS:
        if pattern is _VERDICT and analysis:
            continue
        for match in pattern.finditer(text):
            if not _blocked(text, match):
                found.append((match.start("group"), match.group("group")))
    return sorted(set(found))


def final_answer(text: str) -> str | None:
    """The part of ``text`` an answer is read from: after the last ``</think>``; ``None`` for an unclosed
    ``<think>`` (all thinking).

    >>> final_answer("想。</think>\\n答案：B"), final_answer("<think>\\n还在想"), final_answer("答案：B")
    ('\\n答案：B', None, '答案：B')
    """
    if THINK_CLOSE in text:
        return text.rpartition(THINK_CLOSE)[2]
    return None if THINK_OPEN in text else text


def extract_choice(answer_text: str, letters: str = "ABCDE") -> str | None:
    """The option letter the answer commits to first, or ``None`` (the rule is in the module docstring).

    >>> extract_choice("答案是B。"), extract_choice("选项A错误，故应选C。"), extract_choice("**D**")
    ('B', 'C', 'D')
    >>> extract_choice("\\\\boxed{C}"), extract_choice("【答案】C"), extract_choice("选项D是正确的")
    ('C', 'C', 'D')
    >>> extract_choice("答案：B和C"), extract_choice("A项错误"), extract_choice("不选A"), extract_choice("ACEI")
    (None, None, None, None)
    >>> extract_choice("答案是E", letters="ABCD") is None
    True
    """
    answer = final_answer(answer_text)
    if answer is None:
        return None
    text = unicodedata.normalize("NFKC", answer).strip()
    for _, group in commitments(text):
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
