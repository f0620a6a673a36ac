"""Scoring a final answer against a record's ``key_terms`` and ``ruled_out`` alternatives (pure, no I/O).

Bundled records carry two optional fields written by the medgspo authors (:mod:`medgspo.data.records` validates
them): ``key_terms``, the decisive words of the answer (a diagnosis, a drug, a procedure; each occurs verbatim in
``Response``), and ``ruled_out``, the alternatives the reasoning rejects (each occurs in ``Complex_CoT`` and not in
``Response``). The offline reference judge (:mod:`medgspo.judge.reference.heuristic`) uses them through
:func:`key_term_verdict`:

* ``A`` (+2.0): every key term is *asserted* the way the reference asserts it, and no ruled-out alternative is;
* ``D`` (-0.5): a ruled-out alternative is asserted (the answer concludes, or hedges towards, what the reasoning
  rejected; naming every candidate does not earn a +2.0);
* ``B`` (+0.5): partly right: some key terms asserted as the reference asserts them, the others left out, no
  ruled-out alternative, one committed conclusion (the reference's conclusion with omissions; see docs/judge.md);
* ``None``: no key term asserted, or one said with the opposite polarity, or no committed conclusion: a hedge that
  offers alternatives (可能是X或Y, X、Y均有可能) or a retraction after the key term (X。不过综合考虑更符合Y):
  the judge abstains, since a lexical rule cannot tell which conclusion the answer holds.

A term is *asserted* where it occurs without a negation in its clause: a cue before it (不是, 并非, 排除, 避免,
禁用, 停用 ...) or after it (鉴别, 可除外, 可能性小, 不宜 ...). The cues are words, never a single 不/非/无, which
occur inside medical terms (不稳定型, 非甾体, 无痛). A clause ends at ``，。；！？`` or a line break, and a contrast
word (而是, 但, 改用 ...) starts a new one, so "不考虑左心衰，而是右室梗死" asserts only 右室梗死. A key term must
carry the *reference's* polarity: for "应避免使用硝酸酯类" the answer must also say to avoid 硝酸 (a negated key term
is a correct conclusion there). Latin terms (``CT``, ``SGLT2``) match case-insensitively and only as whole words
(``CT`` is not found in ``CTA`` or ``PCT``).

>>> key_term_verdict("二尖瓣狭窄。", "二尖瓣狭窄合并房颤。", ["二尖瓣狭窄"], ["主动脉瓣关闭不全"]).label
'A'
>>> key_term_verdict("主动脉瓣关闭不全。", "二尖瓣狭窄。", ["二尖瓣狭窄"], ["主动脉瓣关闭不全"]).label
'D'
>>> key_term_verdict("不是主动脉瓣关闭不全。", "二尖瓣狭窄。", ["二尖瓣狭窄"], ["主动脉瓣关闭不全"]).label is None
True
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

# Words that negate a term placed after them in the same clause, and phrases that negate a term placed before them.
NEGATION_BEFORE = tuple(
    "不是 并非 而非 不考虑 不像 不支持 不符合 排除 除外 否认 鉴别 避免 禁用 忌用 勿用 不宜 不应 不用 不能用 不推荐 不首选 "
    "停用 慎用 无需 不需".split()
)
NEGATION_AFTER = tuple(
    "鉴别 除外 排除 可能性小 可能性不大 不支持 不符 不考虑 不是 不宜 不适用 不作为 不推荐 无效 禁用 禁忌 忌用 慎用".split()
)
_CLAUSE_END = re.compile(r"[，,。；;！!？?\n]")
# A hedge: uncertainty and a list of candidates in the clause of a key term (可能是X或Y; X、Y均有可能).
_UNCERTAIN = re.compile(r"可能是|可能为|均可|均有可能|都有可能|也可能|亦可能|或许|不除外|不排除|待排|之一")
_JOINER = re.compile(r"、|或|/|和|与|及")
# A retraction: after the key term, a clause that turns (不过, 但, 然而, 最终 ...) to another conclusion.
_TURN = re.compile(r"不过|但是|但|然而|可是|其实|实际上|综合考虑|综合分析|最终|修正")
_CONCLUDES = re.compile(r"更符合|更可能|更倾向|更像|应为|应是|诊断为|诊断是|考虑为|才是|改为|而是|仍是|是")
_CONTRAST = re.compile(r"而是|而应|而为|但是|但|改用|换用|改为|应为")
_LATIN = re.compile(r"[a-z]")


class TermVerdict(NamedTuple):
    """``label`` is ``"A"``, ``"D"`` or ``None`` (no decision); ``reason`` says which terms decided it."""

    label: str | None
    reason: str


def key_term_verdict(
    answer: str, reference: str, key_terms: Sequence[str], ruled_out: Sequence[str] = ()
) -> TermVerdict:
    """Decide ``A``/``D`` from the key terms and ruled-out alternatives, or ``label=None`` (see the module doc).

    >>> key_term_verdict("应避免硝酸甘油。", "应避免使用硝酸酯类（如硝酸甘油）。", ["硝酸"]).label
    'A'
    >>> key_term_verdict("首选硝酸甘油。", "应避免使用硝酸酯类（如硝酸甘油）。", ["硝酸"]).reason
    'key term(s) not asserted as in the reference: 硝酸'
    >>> key_term_verdict("SGLT2抑制剂或左心耳封堵", "加用SGLT2抑制剂。", ["sglt2"], ["左心耳封堵"]).label
    'D'
    """
    text, ref = _normalize(answer), _normalize(reference)
    wrong = [term for term in ruled_out if term.strip() and True in polarities(text, term)]
    if wrong:
        return TermVerdict("D", f"asserts ruled-out alternative(s): {', '.join(wrong)}")
    terms = [term for term in key_terms if term.strip()]
    if not terms:
        return TermVerdict(None, "no key terms to check")
    asserted = [term for term in terms if _asserted_as_in(text, ref, term)]
    if not asserted:
        return TermVerdict(None, f"key term(s) not asserted as in the reference: {', '.join(terms)}")
    if (problem := uncommitted(text, asserted)) is not None:
        return TermVerdict(None, problem)
    missing = [term for term in terms if term not in asserted]
    if missing:
        return TermVerdict("B", f"partly right: asserts {', '.join(asserted)}, leaves out {', '.join(missing)}")
    return TermVerdict("A", f"asserts every key term ({', '.join(terms)}) and no ruled-out alternative")


def uncommitted(text: str, terms: Sequence[str]) -> str | None:
    """Why an answer that names the key terms does not commit to them (both normalised), or ``None``.

    >>> uncommitted("可能是急性阑尾炎或异位妊娠", ["急性阑尾炎"])
    'hedge: the key term is one of several candidates (急性阑尾炎)'
    >>> uncommitted("首先考虑急性阑尾炎。不过综合考虑更符合异位妊娠。", ["急性阑尾炎"])
    'retraction: a later clause turns to another conclusion (不过综合考虑更符合异位妊娠)'
    >>> uncommitted("首先考虑急性阑尾炎，但需与异位妊娠鉴别。", ["急性阑尾炎"]) is None
    True
    """
    needles = [_normalize(term) for term in terms]
    clauses = [c for c in _CLAUSE_END.split(text) if c.strip()]
    first = next((i for i, c in enumerate(clauses) if any(n in c for n in needles)), None)
    if first is None:
        return None
    for clause in clauses:
        if any(n in clause for n in needles) and _UNCERTAIN.search(clause) and _JOINER.search(clause):
            return f"hedge: the key term is one of several candidates ({', '.join(terms)})"
    for clause in clauses[first + 1 :]:
        if any(n in clause for n in needles):
            continue  # the turn comes back to the key term (但最终诊断仍为X)
        if _TURN.search(clause) and _CONCLUDES.search(clause):
            return f"retraction: a later clause turns to another conclusion ({clause.strip()})"
    return None


def polarities(text: str, term: str) -> list[bool]:
    """For each occurrence of ``term`` in ``text`` (both already normalised): ``True`` if it is asserted, ``False``
    if its clause negates it.

    >>> polarities("不考虑左心衰，而是右室梗死", "右室梗死"), polarities("不考虑左心衰，而是右室梗死", "左心衰")
    ([True], [False])
    >>> polarities("需与ct鉴别，行cta", "ct")
    [False]
    """
    needle = _normalize(term)
    result = []
    for match in re.finditer(re.escape(needle), text):
        start, end = match.span()
        if not _whole_word(text, start, end):
            continue
        before = _clause_before(text, start)
        after = _CLAUSE_END.split(text[end:], maxsplit=1)[0]
        negated = any(cue in before for cue in NEGATION_BEFORE) or any(cue in after for cue in NEGATION_AFTER)
        result.append(not negated)
    return result


def _asserted_as_in(text: str, reference: str, term: str) -> bool:
    """``term`` occurs in ``text`` with the polarity of its first occurrence in ``reference`` (asserted when the
    reference does not contain it at all)."""
    wanted = next(iter(polarities(reference, term)), True)
    return wanted in polarities(text, term)


def _clause_before(text: str, start: int) -> str:
    clause = _CLAUSE_END.split(text[:start])[-1]
    return _CONTRAST.split(clause)[-1]


def _whole_word(text: str, start: int, end: int) -> bool:
    """A Latin letter at an edge of the match must not continue a longer Latin word (``ct`` inside ``cta`` or
    ``pct``); digits may continue (``HLA-B*58`` in ``HLA-B*5801``)."""
    if _LATIN.match(text[start]) and start > 0 and _LATIN.match(text[start - 1]):
        return False
    return not (_LATIN.match(text[end - 1]) and end < len(text) and _LATIN.match(text[end]))


def _normalize(text: str) -> str:
    """NFKC and lower case (full-width letters and case do not matter)."""
    return unicodedata.normalize("NFKC", text).lower()
