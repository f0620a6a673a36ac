"""The offline reference judge (backend ``reference``): a deterministic lexical heuristic for runs with no API.

It is not an LLM judge and claims only what lexical evidence supports. Character-overlap metrics are known to
score an answer that contradicts the reference (one inserted 不) above a correct paraphrase, so overlap alone never
earns a tier here. It decides three tiers and abstains on the rest:

* no committed conclusion, whatever the words: a bare list of terms (a keyword salad), a hedge over several
  candidates or a retraction after the key term (:func:`bare_list`, :func:`.key_terms.uncommitted`): abstain;
* ``E`` (-1.0): only tokenizer special tokens or control characters (``<|im_end|><|endoftext|>``), empty, too
  short, mostly symbols, garbled, degenerate repetition, token salad, only framing words (首选, 诊断 ...) with no
  content, or any text addressed to the grader (:mod:`.manipulation`, the rule every backend applies);
* ``A`` (+2.0): identical to the reference after normalisation; the reference's words with only framing words
  (诊断、考虑、答案为 ...) added or removed; or near-verbatim: the same content characters in nearly the same order
  (``difflib`` ratio >= 0.9). In every case the numbers and the negation words must be the same;
* ``C`` (0.0): fluent text with no medical vocabulary (:mod:`.vocabulary`: an English abbreviation or term such as
  COPD, ARDS or DKA is medical, so a correct answer written with one is never "outside medicine") and no lexical
  overlap with the question or reference;
* with a record's optional ``key_terms``/``ruled_out`` (:mod:`.key_terms`), after the ``E`` rules: ``A`` when the
  answer asserts every key term as the reference does and no ruled-out alternative, ``D`` (-0.5) when it asserts
  a ruled-out alternative; records without them are judged by the rules above alone;
* otherwise ``None`` with ``error="undecided: ..."`` (TRL skips it): a paraphrase (B), a contradiction (D) and a
  partly right answer look alike to a lexical rule. ``--judge_undecided_score`` can assign a tier to
  these instead, for smoke runs that need a dense reward.

It never punishes a correct answer: the reference itself (after normalisation) is ``A`` before any other rule, a
stray special token is dropped before judging, and when in doubt it abstains. Everything is pure;
:class:`ReferenceJudge` wraps :func:`reference_verdict` in the async judge interface.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import NamedTuple

from medgspo.judge.api.accounting import JudgeStats, Judgment
from medgspo.judge.api.base import BaseJudge, Job
from medgspo.judge.reference.key_terms import key_term_verdict
from medgspo.judge.reference.vocabulary import looks_medical
from medgspo.judge.rubric.manipulation import MANIPULATION_REASON, manipulation
from medgspo.judge.rubric.prompt import JudgeItem
from medgspo.judge.rubric.sanitize import clean, only_special_tokens
from medgspo.judge.rubric.tiers import TIERS, label_for

logger = logging.getLogger(__name__)

_WORD_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fffA-Za-z0-9]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_REPEATED_CHAR = re.compile(r"(.)\1{9,}")
_NEGATIONS = ("不", "无", "没", "非", "未", "否", "勿", "禁", "忌", "排除", "除外", "阴性", "避免", "慎用")

_FUNCTION_CHARS = frozenset("的了是为即应该此其和与及等则也就着之而并在于对把被")
_FRAMING = re.compile("最可能的诊断|最可能|可能|诊断|考虑|答案|结论|首选|应为|属于|[的了是为即应该此其]")
NEAR_VERBATIM_RATIO = 0.9
MIN_DISTINCT_TRIGRAMS = 0.35
OFF_TOPIC_OVERLAP = 0.15
MIN_FLUENT_CHARS = 8  # shorter off-topic text is a fragment (E), not "reasonable but outside medicine" (C)
SALAD_MIN_TOKENS = 8
TOO_SHORT = "empty or too short"
_SENTENCE_PUNCT = re.compile(r"[，。；：]|\w[,;]\s")
_LETTER_RUN = re.compile(r"([A-Za-z])\1{3,}")  # zzzz, not the Roman numeral III
_CONTINUING_PUNCT = frozenset("，、；：,;:)）】」』")
BARE_LIST_MIN_ITEMS = 3
BARE_LIST_MAX_ITEM = 12
_LIST_SEPARATORS = re.compile(r"[、/；;,，\s]+")
_SENTENCE_END = re.compile(r"[。！？!?]")
# Words that state something about the terms: a list that holds one is a sentence, not a keyword salad.
_CLAIM = re.compile(
    r"是|为|应|可|需|宜|给予|予以|考虑|诊断|首选|避免|禁用|慎用|选择|建议|采用|进行|立即|尽快|提示|导致|引起|属于|因|由于"
)


class RefVerdict(NamedTuple):
    """The heuristic's decision: a tier label or ``None`` (undecided), and the evidence in words."""

    label: str | None
    reason: str


def reference_verdict(
    question: str, reference: str, answer: str, key_terms: Sequence[str] = (), ruled_out: Sequence[str] = ()
) -> RefVerdict:
    """Decide E, A or C from lexical evidence (and A or D from ``key_terms``/``ruled_out``), or abstain
    (``label=None``).

    >>> reference_verdict("诊断？", "急性阑尾炎。", "急性阑尾炎").label
    'A'
    >>> reference_verdict("诊断？", "急性阑尾炎。", "不是急性阑尾炎").label is None
    True
    """
    if only_special_tokens(answer):
        return RefVerdict("E", "reference heuristic: only special or control tokens")
    if (rule := manipulation(answer)) is not None:  # the judge path's one rule, read before tokens are stripped
        return RefVerdict("E", f"reference heuristic: {MANIPULATION_REASON}: {rule}")
    answer = clean(answer)  # a correct answer with a stray <|im_end|> is still correct
    if _compact(answer) and _compact(answer) == _compact(reference):  # never punish the reference itself
        return RefVerdict("A", "reference heuristic: identical to the reference after normalisation")
    if (why := incoherence(answer)) is not None:
        if why == TOO_SHORT and _compact(answer) and _compact(answer) in _compact(reference):
            return RefVerdict(None, "undecided: a one-character answer found in the reference (是/否, a letter)")
        return RefVerdict("E", f"reference heuristic: {why}")
    if (why := clear_match(answer, reference)) is not None:
        return RefVerdict("A", f"reference heuristic: {why}")
    if (why := fragment(answer)) is not None:
        return RefVerdict("E", f"reference heuristic: {why}")
    if not _FRAMING.sub("", _compact(answer)):  # e.g. "首选" or "最可能的诊断是": a frame with nothing in it
        return RefVerdict("E", "reference heuristic: only framing words (首选, 诊断 ...), no content")
    if key_terms or ruled_out:
        if (why := bare_list(answer)) is not None:  # naming every key term is not a claim: no +2.0 for a salad
            return RefVerdict(None, f"undecided: {why}")
        terms = key_term_verdict(answer, reference, key_terms, ruled_out)
        if terms.label is not None:
            return RefVerdict(terms.label, f"reference heuristic: {terms.reason}")
    if (why := non_medical(question, reference, answer)) is not None:
        # off-topic *and* this short once framing words are set aside: a fragment, not fluent text (a GSPO policy
        # gave every question "首选。在，应尽早干预。" for a 0.0)
        if len(_FRAMING.sub("", _compact(answer))) < MIN_FLUENT_CHARS:
            return RefVerdict("E", f"reference heuristic: a fragment ({why})")
        return RefVerdict("C", f"reference heuristic: {why}")
    return RefVerdict(None, "undecided: no lexical evidence for a tier (paraphrase, contradiction or partial)")


def incoherence(answer: str) -> str | None:
    """Why ``answer`` is empty, broken or degenerate, or ``None`` when it reads as text.

    >>> incoherence("肺炎" * 20)
    'degenerate repetition (2 distinct of 38 character trigrams)'
    """
    visible = [c for c in answer if not c.isspace()]
    words = _WORD_CHAR.findall(answer)
    if len(words) < 2:
        return TOO_SHORT

    if len(words) / len(visible) < 0.5:
        return f"mostly symbols ({len(words)} of {len(visible)} characters are letters or digits)"
    if "\ufffd" in answer:  # undecodable bytes: a byte-level model broke a character; never fluent text
        return "garbled characters (undecodable bytes)"
    compact = "".join(words)
    if _REPEATED_CHAR.search(compact):
        return "one character repeated 10+ times"
    if len(compact) >= 30:
        trigrams = [compact[i : i + 3] for i in range(len(compact) - 2)]
        distinct = len(set(trigrams))
        if distinct / len(trigrams) < MIN_DISTINCT_TRIGRAMS:
            return f"degenerate repetition ({distinct} distinct of {len(trigrams)} character trigrams)"
    return token_salad(answer)


def token_salad(answer: str) -> str | None:
    """Why one line of space-separated tokens is salad rather than text, or ``None``: at least
    :data:`SALAD_MIN_TOKENS` tokens, no sentence punctuation, a token repeated at once (``cGMP cGMP``) and at least
    one more sign of salad: another repeat, a token of symbols only (``##``, ``???``) or a letter run (``zzzz``).
    A dosage line (``0.9% NS 1 L / h``) has symbol tokens but no repeat, and is not salad.

    >>> token_salad("硝酸酯 西地那非 cGMP cGMP cGMP 禁忌 吗 ？ ？ ？ 的 了")
    'token salad (12 tokens, 7 repeated or symbol-only)'
    >>> token_salad("Give IV insulin 0.1 U/kg/h and 0.9% saline 1 L over the first hour") is None
    True
    """
    tokens = answer.split()
    if len(tokens) < SALAD_MIN_TOKENS or "\n" in answer.strip() or _SENTENCE_PUNCT.search(answer):
        return None
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:], strict=False))
    junk = sum(not _WORD_CHAR.search(t) or bool(_LETTER_RUN.fullmatch(t)) for t in tokens)
    if repeats < 1 or repeats + junk < 2:
        return None
    return f"token salad ({len(tokens)} tokens, {repeats + junk} repeated or symbol-only)"


def bare_list(answer: str) -> str | None:
    """Why ``answer`` is a bare list of terms with no claim (``下壁心梗、右心室梗死、硝酸酯类、利尿剂``), or ``None``:
    at least :data:`BARE_LIST_MIN_ITEMS` short items joined by 、，/； or spaces, and no word that states something
    (checked only where key terms could otherwise pay for naming them).

    >>> bare_list("下壁心梗、右心室梗死、硝酸酯类、利尿剂、前负荷")
    'a bare list of 5 terms, no claim'
    >>> bare_list("应避免硝酸酯类、利尿剂和吗啡") is None, bare_list("急性阑尾炎") is None
    (True, True)
    """
    text = unicodedata.normalize("NFKC", answer).strip().rstrip("。.")
    items = [item for item in _LIST_SEPARATORS.split(text) if item.strip()]
    if len(items) < BARE_LIST_MIN_ITEMS or any(len(item) > BARE_LIST_MAX_ITEM for item in items):
        return None
    if _SENTENCE_END.search(text) or _CLAIM.search(text):
        return None
    return f"a bare list of {len(items)} terms, no claim"


def fragment(answer: str) -> str | None:
    """Why ``answer`` is a broken-off fragment (it opens with punctuation that continues a sentence), or ``None``.
    Checked after an exact match, so a terse correct answer still earns A.

    >>> fragment("，但不能雷")
    'starts mid-sentence (a fragment)'
    >>> fragment("肺炎链球菌。") is None
    True
    """
    if answer.lstrip()[:1] in _CONTINUING_PUNCT:
        return "starts mid-sentence (a fragment)"
    return None


def clear_match(answer: str, reference: str) -> str | None:
    """Why ``answer`` clearly says what ``reference`` says, or ``None`` when lexical evidence is not enough.

    Overlap alone is never enough: swapping two drugs between "首选" and "禁用" keeps a character-bigram F1 of 0.85.
    So the content characters must be the same set, in nearly the same order, with identical numbers and
    negation words (one added 不 or a changed dose keeps most characters but reverses the meaning).

    >>> clear_match("妊娠期高血压首选ACEI类药物，禁用拉贝洛尔。", "妊娠期高血压首选拉贝洛尔，禁用ACEI类药物。") is None
    True
    """
    a, r = _compact(answer), _compact(reference)
    if len(a) < 2 or not r:
        return None
    if a == r:
        return "identical to the reference after normalisation"
    if _numbers(answer) != _numbers(reference) or _negations(a) != _negations(r):
        return None
    if (r in a and _framing_only(a.replace(r, "", 1))) or (a in r and _framing_only(r.replace(a, "", 1))):
        return "the reference's words with only framing words added or removed"
    ratio = SequenceMatcher(None, a, r, autojunk=False).ratio()
    if _content_chars(a) == _content_chars(r) and ratio >= NEAR_VERBATIM_RATIO:
        return f"near-verbatim (same content characters, sequence ratio {ratio:.2f}), same numbers and negations"
    return None


def non_medical(question: str, reference: str, answer: str) -> str | None:
    """Why ``answer`` is fluent but outside medicine, or ``None``: no medical word, no abbreviation or other Latin
    word beyond everyday English (:mod:`.vocabulary`: COPD, ARDS, DKA are medical) and no overlap with the task."""
    a = _compact(answer)
    if len(a) < 4 or looks_medical(answer):
        return None
    task = set(_bigrams(_compact(question) + _compact(reference)))
    grams = _bigrams(a)
    overlap = sum(g in task for g in grams) / max(len(grams), 1)
    if overlap >= OFF_TOPIC_OVERLAP:
        return None
    return f"no medical vocabulary and {overlap:.0%} bigram overlap with the question and reference"


def bigram_f1(a: str, b: str) -> float:
    """F1 of the character-bigram multisets of two strings.

    >>> round(bigram_f1("急性阑尾炎", "急性胆囊炎"), 2)
    0.25
    """
    ga, gb = Counter(_bigrams(a)), Counter(_bigrams(b))
    common = sum((ga & gb).values())
    if not common:
        return 0.0
    precision, recall = common / sum(ga.values()), common / sum(gb.values())
    return 2 * precision * recall / (precision + recall)


def _compact(text: str) -> str:
    """NFKC, lower case, letters and digits only."""
    return "".join(_WORD_CHAR.findall(unicodedata.normalize("NFKC", text).lower()))


def _framing_only(text: str) -> bool:
    return not _FRAMING.sub("", text)


def _content_chars(compact: str) -> set[str]:
    return set(compact) - _FUNCTION_CHARS


def _bigrams(text: str) -> list[str]:
    return [text[i : i + 2] for i in range(len(text) - 1)] or ([text] if text else [])


def _numbers(text: str) -> Counter:
    return Counter(float(n) for n in _NUMBER.findall(unicodedata.normalize("NFKC", text)))


def _negations(compact: str) -> Counter:
    return Counter({word: compact.count(word) for word in _NEGATIONS if word in compact})


@dataclass(frozen=True)
class TermJob(Job):
    """A job with the record's key terms and ruled-out alternatives (in its key, so answers to records that
    differ only in them are judged apart)."""

    key_terms: tuple[str, ...] = ()
    ruled_out: tuple[str, ...] = ()


class ReferenceJudge(BaseJudge):
    """The heuristic behind the async judge interface; no network, no cache (it takes microseconds)."""

    backend = "reference"
    uses_cache = False

    @property
    def judge_id(self) -> str:
        return "reference-heuristic"

    def _job(self, item: JudgeItem, answer: str) -> Job:
        job = super()._job(item, answer)
        if not (item.key_terms or item.ruled_out):
            return job
        key = f"{job.key}|{item.key_terms}|{item.ruled_out}"
        return TermJob(job.question, job.reference, job.candidate, key, item.key_terms, item.ruled_out)

    async def _judge_new(self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]) -> dict[str, Judgment]:
        verdicts = {}
        for job in jobs:
            terms = (job.key_terms, job.ruled_out) if isinstance(job, TermJob) else ()
            verdict = reference_verdict(job.question, job.reference, job.candidate, *terms)
            verdicts[job.key] = self._judgment(verdict)
            done(job.key)
        decided = sum(v.label is not None for v in verdicts.values())
        logger.debug("Reference heuristic decided %d of %d unique answers.", decided, len(verdicts))
        return verdicts

    def _judgment(self, verdict: RefVerdict) -> Judgment:
        if verdict.label is not None:
            return Judgment(TIERS[verdict.label], verdict.label, reason=verdict.reason, source="reference")
        fallback = self.config.judge_undecided_score
        if fallback is not None:
            return Judgment(fallback, label_for(fallback), reason=verdict.reason, source="reference")
        return Judgment(None, error=verdict.reason, source="reference")
