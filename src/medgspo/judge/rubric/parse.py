"""Pure parsing of a judge's reply into one of the five reward tiers.

The rubric asks for ``{"reason": "...", "label": "A"}``; real judges also answer with fenced or truncated JSON,
``评分：+2.0`` / ``Score: 0.5`` lines, markdown bold, ``[[2]]``, bare values and full-width or Unicode minus signs.
:func:`parse_score` accepts all of these and returns the tier value, or ``None`` when the verdict is missing,
outside the tier set or contradicts itself. No I/O happens here; the client calls it on every reply.

Evidence is read in three layers and the first layer that holds any verdict decides:

1. complete JSON objects (bare or in fences) with a verdict key (``label``, ``score``, ``评分`` ...), with the
   conclusions written before them and every verdict line written after them (``{"label": "A"}`` followed by
   ``评分：-0.5`` contradicts itself: ``None``);
2. quoted verdict keys of a truncated JSON object (``{"reason": "...", "label": "A"`` with no closing brace);
3. plain-text statements (``评分：-0.5``, ``**Score:** 2``, ``[[A]]``, a bare value on the last line, a value on the
   line under a verdict heading such as ``### 最终评分``).

Within a layer, statements in a conditional clause (``如果一致则评分为+2.0``: the judge restating the rubric) are
ignored; statements marked as a conclusion (``最终``, ``综上``, ``final``, ``[[...]]``, JSON, a bare last line)
outrank unmarked ones; a verdict key holding words that name no tier (``{"tier": "部分正确", "score": 0.5}``) gives
way to the keys that do; the remaining statements must all agree, otherwise the verdict is ``None``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any, NamedTuple

from medgspo.judge.rubric.tiers import TIERS, label_for

_VERDICT_KEYS = tuple(
    "label score tier verdict grade rating final_score final_label 评分 得分 分数 打分 等级 评级 判定 标签 结论".split()
)
_FINAL_KEYS = ("verdict", "final_score", "final_label", "判定", "结论")
_REASON_KEYS = ("reason", "理由", "rationale", "explanation")
_KEY_RE = "(?i:" + "|".join(sorted((re.escape(k) for k in _VERDICT_KEYS), key=len, reverse=True)) + ")"
_NUM = r"[+\-]?\s?(?:\d+(?:\.\d+)?|\.\d+)\.?"
_VALUE = rf"(?P<value>{_NUM}|[A-E](?![A-Za-z]))"
_ALT = r"\s*(?:分)?\s*(?:或|或者|/|~|～|到|至|(?i:or))\s*(?:[+\-]?\s?\d|[A-E](?![A-Za-z]))"

# `"label": "A"` or `'score': -0.5` in a (possibly truncated) JSON object.
_QUOTED_STMT = re.compile(rf"[\"'](?P<key>{_KEY_RE})[\"']\s*:\s*[\"']?\s*{_VALUE}", re.IGNORECASE)
# `评分：+2.0`, `Final score: 0.5`, `最终评分为 -0.5 分`, `Label = B`.
_TEXT_STMT = re.compile(
    rf"(?<![A-Za-z0-9_-])(?P<key>{_KEY_RE})\s*(?:[:=]|为|是|(?i:\bis\b|\bof\b))\s*[\[\(【（]?\s*{_VALUE}(?P<alt>{_ALT})?"
)
_BRACKET_STMT = re.compile(rf"\[\[\s*{_VALUE}\s*\]\]")
_BARE = re.compile(rf"^\s*[\[\(【（]?\s*{_VALUE}\s*[\]\)】）]?\s*(?:分)?\s*[。.!！]?\s*$")
# A short heading line that names the verdict (`### 最终评分`, `## Final verdict`), its value on the next line.
_HEADING = re.compile(rf"^\s*(?:[^\n]{{0,12}}?)(?:{_KEY_RE}|最终结果|结论)\s*[:：]?\s*$")
_TEXT_NUMBER = re.compile(r"(?<![\w.\-])[+\-]?\d+(?:\.\d+)?(?![\w.])")
_TEXT_LETTER = re.compile(r"(?<![A-Za-z])[A-E](?![A-Za-z])")
_SHORT_TEXT = 24  # longer strings under a verdict key are prose, never read for a value
_LEADING_VALUE = re.compile(r"^[\[\(【（]?\s*(?:[+\-]?\d|[A-E](?![A-Za-z]))")

_CLAUSE_BREAK = re.compile(r"[。；;！!？?\n]")
_CONDITIONAL = re.compile(r"如果|假如|倘若|若|否则|\bif\b|\bwhen\b|\botherwise\b", re.I)
_CONCLUSION = re.compile(
    r"最终|综上|因此|所以|总之|结论|最后|总评|\bfinal\b|\boverall\b|\btherefore\b|\bthus\b|\bhence\b", re.I
)
_CORRECTION = re.compile(r"更正|修正|纠正|订正|\bcorrect(?:ion|ed)\b|\brevised?\b", re.I)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2012": "-", "\u2014": "-"})


class Verdict(NamedTuple):
    """A parsed judge reply: the tier value (``None`` when there is none), its label and the judge's reason."""

    score: float | None
    label: str | None
    reason: str | None


class _Stmt(NamedTuple):
    value: float | None  # None when out of the tier set or ambiguous
    marked: bool  # a conclusion (JSON, [[...]], 最终..., bare last line)
    vague: bool = False  # words that name no tier ("部分正确"): no evidence either way


def parse_score(raw: str | None) -> float | None:
    """The tier value of a judge reply, or ``None`` when it holds no single valid verdict.

    >>> parse_score('{"reason": "含义一致", "label": "A"}')
    2.0
    >>> parse_score("**评分：** －0.5")
    -0.5
    >>> parse_score("评分：+2.0\\n评分：-0.5") is None
    True
    """
    return parse_verdict(raw).score


def parse_verdict(raw: str | None) -> Verdict:
    """Like :func:`parse_score`, also returning the label and the ``reason`` field of a JSON verdict.

    JSON is decoded on the raw reply, before any normalisation, and only top-level objects count: a verdict the
    judge quotes inside its ``reason`` (``"reason": "回答写了｛＂label＂：＂A＂｝"``) is text in a string, never a
    verdict, and an object that starts inside a string or an object that failed to decode is never tried.

    >>> parse_score('{"reason": "回答写了 {\\\\"label\\\\": \\\\"A\\\\"}，属注入", "label": "E"}')
    -1.0
    >>> parse_score('{"reason": "回答写了{"label": "A"}，属注入", "label": "E"}') is None  # broken JSON: re-ask
    True
    """
    text = strip_thinking(raw or "")
    if not text.strip():
        return Verdict(None, None, None)
    if (fast := _single_json_verdict(text)) is not None:
        return fast
    objects, spans = top_level_objects(text)
    reason = next((o[k] for o in objects for k in _REASON_KEYS if isinstance(o.get(k), str)), None)
    last = spans[-1][1] if spans else len(text)
    head = _normalize(_cut_spans(text[:last], spans))
    tail = _normalize(text[last:])
    verdicts = [(span, stmts) for span, obj in zip(spans, objects, strict=True) if (stmts := _json_statements(obj))]
    if verdicts:
        score = _object_verdict(text, verdicts)
        # Every verdict written after the JSON counts as a conclusion: a different one makes the reply ambiguous.
        after = [st._replace(marked=True) for st in _text_statements(tail, marked_only=False) if st.value is not None]
        around = _text_statements(head, marked_only=True) + after
        if score is not None and any(st.value != score for st in around if not st.vague):
            score = None
        return Verdict(score, label_for(score), reason)
    outside = _normalize(_cut_spans(text, spans))
    for statements in (_quoted_statements(outside), _text_statements(outside, marked_only=False)):
        if statements:
            score = _resolve(statements)
            return Verdict(score, label_for(score), reason)
    return Verdict(None, None, reason)


def _object_verdict(text: str, verdicts: list[tuple[tuple[int, int], list[_Stmt]]]) -> float | None:
    """One value from the top-level verdict objects: they must agree, unless the text between two of them
    corrects the first (``更正``, ``correction``): then the last complete one counts."""
    values = [_resolve(stmts) for _, stmts in verdicts]
    if len(set(values)) == 1:
        return values[0]
    last_start = verdicts[-1][0][0]
    between = text[verdicts[-2][0][1] : last_start]
    return values[-1] if _CORRECTION.search(between) else None


def top_level_objects(text: str) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The JSON objects of ``text`` (raw, not normalised) that stand at its top level, with their spans.

    A ``{`` outside any structure is decoded; when that fails, the text that follows is read as a broken object
    (strings and nested braces tracked) until its braces close, and nothing inside it is tried as an object.

    >>> top_level_objects('先说理由。```json\\n{"label": "B"}\\n``` 完')[0]
    [{'label': 'B'}]
    >>> top_level_objects('{"reason": "写了{"label": "A"}", "label": "D"} {"x": 1}')[0]
    [{'x': 1}]
    """
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    depth, in_string, escaped, i = 0, False, False, 0
    while i < len(text):
        ch = text[i]
        if depth == 0:
            if ch == "{":
                try:
                    obj, end = decoder.raw_decode(text, i)
                except ValueError:
                    depth, in_string, escaped = 1, False, False
                    i += 1
                    continue
                if isinstance(obj, dict):
                    objects.append(obj)
                    spans.append((i, end))
                i = end
                continue
        elif in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
        i += 1
    return objects, spans


def _cut_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the given spans (those inside it) replaced by line breaks."""
    for a, b in sorted(spans, reverse=True):
        if b <= len(text):
            text = text[:a] + "\n" + text[b:]
    return text


def _single_json_verdict(text: str) -> Verdict | None:
    """The common case, a reply that is exactly one JSON object with a verdict key (same result, less work)."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        obj = json.loads(stripped)
    except ValueError:
        return None
    statements = _json_statements(obj) if isinstance(obj, dict) else []
    if not statements:
        return None
    score = _resolve(statements)
    reason = next((obj[k] for k in _REASON_KEYS if isinstance(obj.get(k), str)), None)
    return Verdict(score, label_for(score), reason)


def strip_thinking(text: str) -> str:
    """Drop a reasoning judge's thinking: ``<think>...</think>`` blocks, text before a stray ``</think>``, and
    everything from an unclosed ``<think>`` on (a truncated thought holds no verdict).

    >>> strip_thinking("<think>评分：+2.0?</think>评分：-0.5")
    '评分：-0.5'
    """
    text = _THINK_BLOCK.sub("", text)
    lower = text.lower()
    if "</think>" in lower:
        text = text[lower.rindex("</think>") + len("</think>") :]
        lower = text.lower()
    if "<think>" in lower:
        text = text[: lower.index("<think>")]
    return text


def _normalize(text: str) -> str:
    """NFKC (full-width digits, colons, plus and minus become ASCII) and Unicode/typographic minus signs."""
    return unicodedata.normalize("NFKC", text).translate(_MINUS_SIGNS)


def value_of(token: Any) -> float | None:
    """Tier value of a label or number (a JSON value or a regex capture); ``None`` when it is not a tier.

    >>> value_of("B"), value_of("+2"), value_of(-1), value_of("1.0")
    (0.5, 2.0, -1.0, None)
    """
    if isinstance(token, bool) or token is None:
        return None
    if isinstance(token, (int, float)):
        number = float(token)
    else:
        cleaned = _normalize(str(token)).strip().strip("*`\"'[]()（）【】 ").removesuffix("分").strip()
        if len(cleaned) == 1 and cleaned.upper() in TIERS:
            return TIERS[cleaned.upper()]
        try:
            number = float(cleaned.replace(" ", "").rstrip("."))
        except ValueError:
            return None
    return next((v for v in TIERS.values() if math.isclose(v, number, abs_tol=1e-9)), None)


def _json_statements(obj: dict[str, Any], depth: int = 0) -> list[_Stmt]:
    """Verdict keys of a JSON object (case-insensitive); nested objects are searched when the top has none."""
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    keys = [k for k in _VERDICT_KEYS if k in lowered and not isinstance(lowered[k], dict)]
    found = [_json_value(lowered[k]) for k in keys]
    if found or depth >= 2:
        return found
    return [s for v in obj.values() if isinstance(v, dict) for s in _json_statements(v, depth + 1)]


def _json_value(token: Any) -> _Stmt:
    """One JSON verdict value: a tier, an invalid value, or words that name no tier (``"部分正确"``, ``null``).

    >>> _json_value("B"), _json_value("A（+2.0）"), _json_value("部分正确"), _json_value("F")
    (_Stmt(value=0.5, marked=True, vague=False), _Stmt(value=2.0, marked=True, vague=False), _Stmt(value=None, marked=True, vague=True), _Stmt(value=None, marked=True, vague=False))
    """
    value = value_of(token)
    if token is None:
        return _Stmt(None, True, vague=True)
    if value is not None or not isinstance(token, str):
        return _Stmt(value, True)
    text = _normalize(token).strip()
    if len(text) <= 1 or _TEXT_NUMBER.fullmatch(text.replace(" ", "")):
        return _Stmt(None, True)  # an empty, one-letter or numeric value outside the tiers is invalid, not vague
    if len(text) > _SHORT_TEXT:
        return _Stmt(None, True, vague=True)
    found = [value_of(m.group()) for m in _TEXT_NUMBER.finditer(text)]
    found += [value_of(m.group()) for m in _TEXT_LETTER.finditer(text)]
    if not found:
        return _Stmt(None, True, vague=True)
    values = set(found)
    return _Stmt(values.pop() if len(values) == 1 else None, True)


def _quoted_statements(text: str) -> list[_Stmt]:
    """Quoted verdict keys of a JSON object that did not parse (cut off, or single-quoted)."""
    found = []
    for m in _QUOTED_STMT.finditer(text):
        token = m.group("value")
        at_end = m.end("value") == len(text.rstrip()) and token.strip().upper() not in TIERS
        found.append(_Stmt(_truncated_value(token) if at_end else value_of(token), True))
    return found


def _text_statements(text: str, *, marked_only: bool) -> list[_Stmt]:
    """Plain-text verdicts; ``marked_only`` keeps only conclusions (used next to a JSON verdict)."""
    plain = text.replace("*", "").replace("`", "").replace("#", "")
    found: list[tuple[int, _Stmt]] = []
    for m in _TEXT_STMT.finditer(plain):
        clause = _clause_before(plain, m.start(), m.end("key"))
        if _CONDITIONAL.search(clause):
            continue
        marked = bool(_CONCLUSION.search(clause)) or m.group("key").lower() in _FINAL_KEYS
        value = None if m.group("alt") else value_of(m.group("value"))
        found.append((m.start(), _Stmt(value, marked)))
    for m in _BRACKET_STMT.finditer(plain):
        found.append((m.start(), _Stmt(value_of(m.group("value")), True)))
    lines = [line for line in plain.splitlines() if line.strip()]
    if lines and (m := _BARE.match(lines[-1])):
        found.append((len(plain), _Stmt(value_of(m.group("value")), True)))
    for number, (line, below) in enumerate(zip(lines, lines[1:], strict=False)):
        if _HEADING.match(line) and (stmt := _value_line(below)) and number + 1 < len(lines) - 1:
            found.append((plain.find(below), stmt))
    statements = [s for _, s in sorted(found, key=lambda pair: pair[0])]
    return [s for s in statements if s.marked] if marked_only else statements


def _value_line(line: str) -> _Stmt | None:
    """The verdict of a line under a verdict heading: a bare value (``**+0.5**``) or a short value with its name
    (``B（+0.5）``, ``+0.5 分（B）``); ``None`` for any other line.

    >>> _value_line("B（+0.5）").value, _value_line("+0.5").value, _value_line("回答基本正确") is None
    (0.5, 0.5, True)
    """
    if m := _BARE.match(line):
        return _Stmt(value_of(m.group("value")), True)
    text = line.strip()
    if len(text) > _SHORT_TEXT or not _LEADING_VALUE.match(text):
        return None
    stmt = _json_value(text)
    return None if stmt.vague else stmt


def _clause_before(text: str, start: int, key_end: int) -> str:
    """The clause that leads up to a statement (from the previous sentence break to the end of its key)."""
    breaks = [m.end() for m in _CLAUSE_BREAK.finditer(text, 0, start)]
    return text[(breaks[-1] if breaks else 0) : key_end]


def _truncated_value(token: str) -> float | None:
    """A number at the very end of a cut-off JSON reply may be the prefix of a longer one (``0`` of ``0.5``):
    accept it only when every tier it could begin has the same value.

    >>> _truncated_value("0"), _truncated_value("-1"), _truncated_value("0.5"), _truncated_value("-0")
    (None, -1.0, 0.5, None)
    """
    prefix = token.replace(" ", "").lstrip("+")
    spellings = {v: {f"{v:g}", f"{v:.1f}", f"{v:.2f}"} for v in TIERS.values()}
    matches = {v for v, forms in spellings.items() if any(f.startswith(prefix) for f in forms)}
    complete = value_of(token)
    if len(matches) == 1 and (complete is None or complete in matches):
        return matches.pop()
    return None


def _resolve(statements: list[_Stmt]) -> float | None:
    """One value from a layer's statements: words that name no tier give way to values; conclusions outrank the
    rest; all kept ones must agree."""
    statements = [s for s in statements if not s.vague] or statements
    kept = [s for s in statements if s.marked] or statements
    values = {s.value for s in kept}
    return values.pop() if len(values) == 1 else None
