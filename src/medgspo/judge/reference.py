"""The offline reference judge (backend ``reference``): a deterministic lexical heuristic for runs with no API.

It is not an LLM judge and claims only what lexical evidence supports. Character-overlap metrics are known to
score an answer that contradicts the reference (one inserted 不) above a correct paraphrase, so overlap alone never
earns a tier here. It decides three tiers and abstains on the rest:

* ``E`` (-1.0): empty, too short, mostly symbols, garbled, degenerate repetition, only framing words (首选, 诊断 ...)
  with no content, or an instruction to the judge with no medical content;
* ``A`` (+2.0): identical to the reference after normalisation; the reference's words with only framing words
  (诊断、考虑、答案为 ...) added or removed; or near-verbatim: the same content characters in nearly the same order
  (``difflib`` ratio >= 0.9). In every case the numbers and the negation words must be the same;
* ``C`` (0.0): fluent text with no medical vocabulary and no lexical overlap with the question or reference;
* otherwise ``None`` with ``error="undecided: ..."`` (TRL skips it): a paraphrase (B), a contradiction (D) and a
  partly right answer look alike to a lexical rule. ``JudgeConfig.reference_undecided_score`` can assign a tier to
  these instead, for smoke runs that need a dense reward.

Everything is pure; :class:`ReferenceJudge` wraps :func:`reference_verdict` in the async judge interface.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from difflib import SequenceMatcher
from typing import NamedTuple

from medgspo.judge.accounting import JudgeStats, Judgment
from medgspo.judge.base import BaseJudge, Job
from medgspo.judge.tiers import TIERS, label_for

logger = logging.getLogger(__name__)

_WORD_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fffA-Za-z0-9]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_REPEATED_CHAR = re.compile(r"(.)\1{9,}")
_NEGATIONS = ("不", "无", "没", "非", "未", "否", "勿", "禁", "忌", "排除", "除外", "阴性", "避免", "慎用")
_MEDICAL_ZH = (
    "病 症 药 炎 癌 瘤 疗 诊 医 患 疾 菌 毒 疫 脏 腺 肿 疡 脓 痰 咳 喘 痛 疼 血 脉 肝 肾 肺 胃 肠 骨 髓 栓 孕 胎 疹 疮 脾 "
    "手术 检查 剂量 口服 静脉 注射 服用 处方 过敏 发热 发烧 头晕 恶心 呕吐 腹泻 便秘 心脏 心率 心电 呼吸 体温 免疫 "
    "激素 维生素 营养 康复 护理 复查 就诊 就医 休息 饮食 锻炼 睡眠 体重 妊娠 分娩 大脑 脑部 神经 中医 针灸 方剂 草药 "
    "穴位 经络 气血 阴虚 阳虚 舌苔 补液 输液 抗体 指标 影像"
).split()
_MEDICAL_EN = (
    r"\b(?:mg|ml|mmol|dose|patient|disease|diagnos\w*|treat\w*|therap\w*|symptom\w*|infect\w*|clinic\w*|ct|mri|ecg)\b"
)
_MEDICAL = re.compile("|".join(_MEDICAL_ZH) + "|" + _MEDICAL_EN, re.IGNORECASE)

_FUNCTION_CHARS = frozenset("的了是为即应该此其和与及等则也就着之而并在于对把被")
_FRAMING = re.compile("最可能的诊断|最可能|可能|诊断|考虑|答案|结论|首选|应为|属于|[的了是为即应该此其]")
_INJECTION = re.compile(
    r"忽略.{0,12}(规则|指令|要求|提示)|(给|打|评).{0,6}(满分|高分|A级|2分)|(评分|score)\s*[:：]?\s*A\b"
    r"|ignore (all |the )?(previous|above) (instructions|rules)",
    re.IGNORECASE,
)
NEAR_VERBATIM_RATIO = 0.9
MIN_DISTINCT_TRIGRAMS = 0.35
OFF_TOPIC_OVERLAP = 0.15
MIN_FLUENT_CHARS = 8  # shorter off-topic text is a fragment (E), not "reasonable but outside medicine" (C)
_CONTINUING_PUNCT = frozenset("，、；：,;:)）】」』")


class RefVerdict(NamedTuple):
    """The heuristic's decision: a tier label or ``None`` (undecided), and the evidence in words."""

    label: str | None
    reason: str


def reference_verdict(question: str, reference: str, answer: str) -> RefVerdict:
    """Decide E, A or C from lexical evidence, or abstain (``label=None``).

    >>> reference_verdict("诊断？", "急性阑尾炎。", "急性阑尾炎").label
    'A'
    >>> reference_verdict("诊断？", "急性阑尾炎。", "不是急性阑尾炎").label is None
    True
    """
    if (why := incoherence(answer)) is not None:
        return RefVerdict("E", f"reference heuristic: {why}")
    if _INJECTION.search(answer) and not _MEDICAL.search(unicodedata.normalize("NFKC", answer)):
        return RefVerdict("E", "reference heuristic: an instruction to the judge with no medical content")
    if (why := clear_match(answer, reference)) is not None:
        return RefVerdict("A", f"reference heuristic: {why}")
    if (why := fragment(answer)) is not None:
        return RefVerdict("E", f"reference heuristic: {why}")
    if not _FRAMING.sub("", _compact(answer)):  # e.g. "首选" or "最可能的诊断是": a frame with nothing in it
        return RefVerdict("E", "reference heuristic: only framing words (首选, 诊断 ...), no content")
    if (why := non_medical(question, reference, answer)) is not None:
        if len(_compact(answer)) < MIN_FLUENT_CHARS:  # off-topic *and* this short: a fragment, not fluent text
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
        return "empty or too short"

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
    return None


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
    """Why ``answer`` is fluent but outside medicine, or ``None``: no medical word and no overlap with the task."""
    a = _compact(answer)
    if len(a) < 4 or _MEDICAL.search(unicodedata.normalize("NFKC", answer)):
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


class ReferenceJudge(BaseJudge):
    """The heuristic behind the async judge interface; no network, no cache (it takes microseconds)."""

    backend = "reference"
    uses_cache = False

    @property
    def judge_id(self) -> str:
        return "reference-heuristic"

    async def _judge_new(self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]) -> dict[str, Judgment]:
        verdicts = {}
        for job in jobs:
            verdicts[job.key] = self._judgment(reference_verdict(job.question, job.reference, job.candidate))
            done(job.key)
        decided = sum(v.label is not None for v in verdicts.values())
        logger.debug("Reference heuristic decided %d of %d unique answers.", decided, len(verdicts))
        return verdicts

    def _judgment(self, verdict: RefVerdict) -> Judgment:
        if verdict.label is not None:
            return Judgment(TIERS[verdict.label], verdict.label, reason=verdict.reason, source="reference")
        fallback = self.config.reference_undecided_score
        if fallback is not None:
            return Judgment(fallback, label_for(fallback), reason=verdict.reason, source="reference")
        return Judgment(None, error=verdict.reason, source="reference")
