"""Multiple-choice evaluation: load single-answer items, ask for a letter, extract it strictly, score accuracy.

    medgspo eval --task mcq                                   # the bundled data/mcq_zh.jsonl on the tiny model
    medgspo eval --task mcq --data CMExam/test.csv --model Qwen/Qwen3.5-4B --adapter runs/gspo

Three input layouts, picked by :func:`load_mcq` from the file (``layout="auto"``) or named explicitly:

* ``medgspo``: our JSONL (or a JSON array): ``question``, ``options`` {"A": ..., "E": ...}, ``answer``, optional
  ``explanation`` and ``subject``;
* ``cmexam``: the CMExam CSV: ``Question``, ``Options`` (one option per line, ``A 选项文本``), ``Answer`` (letter or
  letters), optional subject columns (``Clinical Department``, ``Disease Group``, ``Medical Discipline``);
* ``cmb``: the CMB-Exam JSON: an array of ``question``, ``option`` {"A": ...}, ``answer``, ``exam_subject`` /
  ``exam_class`` / ``exam_type``.

Only single-answer items are evaluated; multi-answer items (``ABD``) are skipped and counted. Bad input raises
:class:`medgspo.data.records.DataError` listing every problem as ``file:line: field: what is wrong``.

:func:`extract_choice` is the strict, pure answer extractor; its rule is written in its docstring and in
``docs/evaluation.md``. :func:`evaluate_mcq` generates and scores one model, :func:`run_mcq` several models and
writes ``mcq_generations.jsonl``, ``mcq.json`` and ``mcq.md``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import THINK_CLOSE, split_completion
from medgspo.data.records import BUNDLED_MCQ, DataError, Problem, decode_text, iter_json, iter_jsonl
from medgspo.eval.metrics import mcq_markdown_table, summarize_mcq

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "medgspo", "cmexam", "cmb")
CMEXAM_SUBJECT_COLUMNS = ("Clinical Department", "Disease Group", "Medical Discipline")
CMB_SUBJECT_FIELDS = ("exam_subject", "exam_class", "exam_type")
PROMPT_INSTRUCTION = "以下是一道单项选择题，只有一个正确答案。"
PROMPT_REQUEST = "请先思考，最后只给出正确选项的字母，格式为“答案：X”。"


@dataclass
class MCQItem:
    """One single-answer multiple-choice question and where it came from."""

    question: str
    options: dict[str, str]
    answer: str
    subject: str | None = None
    explanation: str | None = None
    source: str = ""
    line: int | None = None

    @property
    def letters(self) -> str:
        """The option letters in order, e.g. ``"ABCDE"``."""
        return "".join(self.options)


@dataclass
class MCQLoad:
    """What :func:`load_mcq` read: the single-answer items and how many multi-answer items it skipped."""

    items: list[MCQItem] = field(default_factory=list)
    skipped_multi: int = 0
    layout: str = ""
    source: str = ""


# ---- validation (pure) ----------------------------------------------------------------------------------------
def _letter(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().upper()


def normalize_answer(raw: Any) -> str | None:
    """The answer letters of a gold label (``"B"``, ``"ａ"``, ``"A,C"``, ``"ACD"``), or ``None`` if not letters.

    >>> normalize_answer(" Ｂ "), normalize_answer("A、C"), normalize_answer("C是对的")
    ('B', 'AC', None)
    """
    if not isinstance(raw, str):
        return None
    letters = re.sub(r"[\s,，、;；/]+", "", unicodedata.normalize("NFKC", raw)).upper()
    if not letters or not re.fullmatch(r"[A-Z]+", letters):
        return None
    return "".join(dict.fromkeys(letters))


def make_item(raw: dict[str, Any], names: dict[str, str], path: str, line: int | None
              ) -> tuple[MCQItem | None, bool, list[Problem]]:  # fmt: skip
    """Validate one decoded item whose fields are ``question``, ``options`` (a dict), ``answer`` and optionally
    ``subject``/``explanation``; ``names`` maps them to the layout's own field names for error messages.

    Returns ``(item, is_multi_answer, problems)``: an item only when valid and single-answer. Options with empty
    text are dropped (some exams pad to five options).
    """
    problems = []
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(Problem(path, line, names["question"], "missing or empty"))
    options, option_problems = _check_options(raw.get("options"), names["options"], path, line)
    problems += option_problems
    answer = normalize_answer(raw.get("answer"))
    if answer is None:
        problems.append(Problem(path, line, names["answer"], f"expected option letter(s), got {raw.get('answer')!r}"))
    elif options and any(letter not in options for letter in answer):
        given = "".join(options)
        problems.append(Problem(path, line, names["answer"], f"{answer!r} is not among the options {given}"))
    if problems:
        return None, False, problems
    if len(answer) > 1:
        return None, True, []
    item = MCQItem(question.strip(), options, answer, _text(raw.get("subject")), _text(raw.get("explanation")),
                   path, line)  # fmt: skip
    return item, False, []


def _check_options(options: Any, name: str, path: str, line: int | None) -> tuple[dict[str, str], list[Problem]]:
    if not isinstance(options, dict):
        return {}, [Problem(path, line, name, f"expected an object of letter -> text, got {type(options).__name__}")]
    clean, problems = {}, []
    for key, text in options.items():
        letter = _letter(str(key))
        if not re.fullmatch(r"[A-Z]", letter):
            problems.append(Problem(path, line, name, f"option key {key!r} is not a single letter A-Z"))
        elif not isinstance(text, (str, int, float)) or isinstance(text, bool):
            problems.append(Problem(path, line, name, f"option {letter}: expected text, got {type(text).__name__}"))
        elif letter in clean:
            problems.append(Problem(path, line, name, f"option {letter} appears twice"))
        elif str(text).strip():
            clean[letter] = str(text).strip()
    if not problems and len(clean) < 2:
        problems.append(Problem(path, line, name, f"needs at least 2 non-empty options, got {len(clean)}"))
    return dict(sorted(clean.items())), problems


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


_OPTION_LINE = re.compile(r"^\s*([A-ZＡ-Ｚ])(?:\s*[.．、:：)）]\s*|\s+|(?=[^\x00-\x7f]))(.*)$")


def parse_option_lines(text: str) -> dict[str, str] | None:
    """CMExam's ``Options`` cell (``"A 选项文本\\nB ..."``) as a dict; a line without a letter continues the
    previous option. ``None`` when the first line has no letter or a letter repeats.

    >>> parse_option_lines("A 阿托品\\nB、新斯的明\\nC. 碘解磷定\\n（大剂量）")
    {'A': '阿托品', 'B': '新斯的明', 'C': '碘解磷定 （大剂量）'}
    """
    options: dict[str, str] = {}
    last = None
    for raw_line in text.splitlines():
        if not raw_line.strip():
            continue
        match = _OPTION_LINE.match(raw_line)
        if match:
            last = _letter(match.group(1))
            if last in options:
                return None
            options[last] = match.group(2).strip()
        elif last is None:
            return None
        else:
            options[last] = f"{options[last]} {raw_line.strip()}".strip()
    return options or None


# ---- the three layouts ----------------------------------------------------------------------------------------
def _finish(path: str, layout: str, results: list[tuple[MCQItem | None, bool, list[Problem]]]) -> MCQLoad:
    problems = [p for _, _, found in results for p in found]
    if problems:
        raise DataError(problems)
    load = MCQLoad([item for item, _, _ in results if item is not None], sum(m for _, m, _ in results), layout, path)
    if not load.items:
        raise DataError([Problem(path, None, "<file>", f"no single-answer items ({load.skipped_multi} multi-answer)")])
    if load.skipped_multi:
        logger.info("Skipped %d multi-answer item(s) in %s.", load.skipped_multi, path)
    return load


def _decode(path: Path) -> str:
    if not path.is_file():
        raise DataError([Problem(str(path), None, "<path>", "no such file")])
    text, problems = decode_text(path.read_bytes(), str(path))
    if text is None:
        raise DataError(problems)
    return text


def _rows_from_json(text: str, path: str, jsonl: bool) -> list[tuple[int, Any, Problem | None]]:
    return list(iter_jsonl(text, path) if jsonl else iter_json(text, path))


def load_medgspo(path: str | Path) -> MCQLoad:
    """Our layout: JSONL (or a JSON array) of ``question``/``options``/``answer``[/``subject``/``explanation``]."""
    path = Path(path)
    names = {"question": "question", "options": "options", "answer": "answer"}
    results = []
    for line, obj, problem in _rows_from_json(_decode(path), str(path), path.suffix.lower() != ".json"):
        if problem is not None:
            results.append((None, False, [problem]))
        elif not isinstance(obj, dict):
            results.append((None, False, [Problem(str(path), line, "<record>", "expected a JSON object")]))
        else:
            results.append(make_item(obj, names, str(path), line))
    return _finish(str(path), "medgspo", results)


def load_cmb(path: str | Path) -> MCQLoad:
    """CMB-Exam: a JSON array of ``question``, ``option`` {"A": ...}, ``answer``, ``exam_subject``/..."""
    path = Path(path)
    names = {"question": "question", "options": "option", "answer": "answer"}
    results = []
    for line, obj, problem in _rows_from_json(_decode(path), str(path), jsonl=path.suffix.lower() == ".jsonl"):
        if problem is not None:
            results.append((None, False, [problem]))
        elif not isinstance(obj, dict):
            results.append((None, False, [Problem(str(path), line, "<record>", "expected a JSON object")]))
        else:
            subject = next((obj[k] for k in CMB_SUBJECT_FIELDS if _text(obj.get(k))), None)
            raw = {"question": obj.get("question"), "options": obj.get("option"), "answer": obj.get("answer"),
                   "subject": subject, "explanation": obj.get("explanation")}  # fmt: skip
            results.append(make_item(raw, names, str(path), line))
    return _finish(str(path), "cmb", results)


def load_cmexam(path: str | Path, subject_column: str | None = None) -> MCQLoad:
    """CMExam CSV: ``Question``, ``Options`` (``A 文本`` lines), ``Answer``; the subject is ``subject_column``
    or the first of :data:`CMEXAM_SUBJECT_COLUMNS` the file has. Lines are physical lines of the file."""
    path, name = Path(path), str(Path(path))
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        raise DataError([Problem(name, 1, "<csv>", f"unreadable header: {err}")]) from None
    missing = [c for c in ("Question", "Options", "Answer") if c not in header]
    if subject_column and subject_column not in header:
        missing.append(subject_column)
    if missing:
        msg = f"missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}"
        raise DataError([Problem(name, 1, "<header>", msg)])
    subject_col = subject_column or next((c for c in CMEXAM_SUBJECT_COLUMNS if c in header), None)
    names = {"question": "Question", "options": "Options", "answer": "Answer"}
    results, start = [], reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError([Problem(name, reader.line_num, "<csv>", str(err))]) from None
        options_cell = row.get("Options") or ""
        options = parse_option_lines(options_cell)
        if options is None:
            problem = Problem(name, start, "Options", "expected one option per line: 'A 选项文本' (letters unique)")
            results.append((None, False, [problem]))
        else:
            subject = row.get(subject_col) if subject_col else None
            raw = {"question": row.get("Question"), "options": options, "answer": row.get("Answer"),
                   "subject": subject, "explanation": row.get("Explanation")}  # fmt: skip
            results.append(make_item(raw, names, name, start))
        start = reader.line_num + 1
    return _finish(name, "cmexam", results)


def detect_layout(path: str | Path) -> str:
    """``cmexam`` for ``.csv``; for ``.json``/``.jsonl``, ``cmb`` when the first record has ``option`` and
    ``medgspo`` otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return "cmexam"
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise DataError([Problem(str(path), None, "<path>", "unsupported file type; use .jsonl, .json or .csv")])
    for _, obj, _ in _rows_from_json(_decode(path), str(path), path.suffix.lower() == ".jsonl"):
        return "cmb" if isinstance(obj, dict) and "option" in obj and "options" not in obj else "medgspo"
    return "medgspo"


def load_mcq(path: str | Path | None = None, layout: str = "auto") -> MCQLoad:
    """Load single-answer items (``None`` = the bundled ``data/mcq_zh.jsonl``) in the given or detected layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"MCQ layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path or BUNDLED_MCQ)
    layout = detect_layout(path) if layout == "auto" else layout
    loaders = {"medgspo": load_medgspo, "cmexam": load_cmexam, "cmb": load_cmb}
    return loaders[layout](path)


# ---- prompt and strict extraction (pure) ----------------------------------------------------------------------
def build_prompt(item: MCQItem) -> str:
    """The user turn: the question, the options one per line, and a request for the letter.

    >>> print(build_prompt(MCQItem("首选药物是（　）", {"A": "青霉素", "B": "红霉素"}, "A")))
    以下是一道单项选择题，只有一个正确答案。
    <BLANKLINE>
    首选药物是（　）
    <BLANKLINE>
    A. 青霉素
    B. 红霉素
    <BLANKLINE>
    请先思考，最后只给出正确选项的字母，格式为“答案：X”。
    """
    options = "\n".join(f"{letter}. {text}" for letter, text in item.options.items())
    return f"{PROMPT_INSTRUCTION}\n\n{item.question}\n\n{options}\n\n{PROMPT_REQUEST}"


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


# ---- generation and scoring (I/O) -----------------------------------------------------------------------------
def evaluate_mcq(
    model: str,
    adapter: str | None,
    items: list[MCQItem],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    name: str | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate an answer per item and score the extracted letter; returns ``(summary, rows)``.

    The summary is :func:`medgspo.eval.metrics.summarize_mcq` plus the model and generation settings; each row holds
    the question, subject, gold letter, completion, thinking, answer text, well_formed, prediction and correct.
    """
    from medgspo.eval.open_ended import generate_answers

    gens = generate_answers(
        model, adapter, [build_prompt(item) for item in items], batch_size=batch_size,
        max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed, sampling=sampling,
        desc=f"{name or model}: generating", show_progress=show_progress,
    )  # fmt: skip
    rows = []
    for item, gen in zip(items, gens, strict=True):
        prediction = extract_choice(gen.split.answer, item.letters) if gen.split.answer else None
        rows.append({
            "question": item.question, "subject": item.subject, "gold": item.answer, "completion": gen.text,
            "thinking": gen.split.thinking, "answer": gen.split.answer, "well_formed": gen.split.well_formed,
            "prediction": prediction, "correct": prediction == item.answer, "n_tokens": gen.n_tokens,
        })  # fmt: skip
    summary = summarize_mcq(rows)
    summary.update(model=model, adapter=adapter, max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed)
    logger.info("%s: MCQ accuracy %d/%d", name or model, summary["correct"], summary["n"])
    return summary, rows


def run_mcq(
    models: list[tuple[str, str, str | None]],
    items: list[MCQItem],
    output_dir: str | Path,
    **gen: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate each ``(name, model, adapter)`` on ``items``; write ``mcq_generations.jsonl`` (one line per model
    and item, with a ``model`` field), ``mcq.json`` (summaries by name) and ``mcq.md``; return the summaries."""
    from medgspo.eval.open_ended import check_names
    from medgspo.utils.io import write_json, write_jsonl

    check_names(models)
    out = Path(output_dir)
    summaries, all_rows = {}, []
    for name, model, adapter in models:
        summary, rows = evaluate_mcq(model, adapter, items, name=name, **gen)
        summaries[name] = summary
        all_rows += [{"model": name, **row} for row in rows]
    write_jsonl(out / "mcq_generations.jsonl", all_rows)
    write_json(out / "mcq.json", summaries)
    (out / "mcq.md").write_text("# Multiple-choice evaluation\n\n" + mcq_markdown_table(summaries) + "\n",
                                encoding="utf-8")  # fmt: skip
    return summaries
