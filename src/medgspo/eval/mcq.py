"""Multiple-choice evaluation: ask each model for one letter, read it with the strict rule, report accuracy.

    medgspo eval --task mcq                                   # the bundled data/mcq_zh.jsonl on the tiny model
    medgspo eval --task mcq --data CMExam/test.csv --model Qwen/Qwen3.5-4B --adapter runs/gspo

Items come from :mod:`medgspo.eval.layouts` (our JSONL, CMExam CSV, CMB-Exam JSON), the letter from
:func:`medgspo.eval.extraction.extract_choice`. :class:`MCQTask` is this task for the shared loop
(:func:`medgspo.eval.runner.evaluate`), which writes ``mcq_generations.jsonl``, ``mcq.json`` and ``mcq.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medgspo.eval.extraction import extract_choice
from medgspo.eval.layouts import MCQItem
from medgspo.eval.metrics import mcq_markdown_table, summarize_mcq
from medgspo.eval.runner import GenerationSettings, Summaries, Task, completion_fields
from medgspo.modeling.generation import Generation
from medgspo.utils.io import write_text

logger = logging.getLogger(__name__)

PROMPT_INSTRUCTION = "以下是一道单项选择题，只有一个正确答案。"
PROMPT_REQUEST = "请先思考，最后只给出正确选项的字母，格式为“答案：X”。"


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


def score_choices(items: list[MCQItem], generations: list[Generation]) -> list[dict[str, Any]]:
    """One row per item: the completion's fields, the extracted ``prediction`` (``None`` without a single letter
    in the answer) and whether it is ``correct``."""
    rows = []
    for item, gen in zip(items, generations, strict=True):
        prediction = extract_choice(gen.split.answer, item.letters) if gen.split.answer else None
        rows.append(
            {
                "question": item.question,
                "subject": item.subject,
                "gold": item.answer,
                **completion_fields(gen),
                "prediction": prediction,
                "correct": prediction == item.answer,
            }
        )
    return rows


class MCQTask(Task):
    """Single-answer multiple-choice ``items`` scored by letter match."""

    files = {"generations": "mcq_generations.jsonl", "summaries": "mcq.json", "table": "mcq.md"}

    def __init__(self, items: list[MCQItem]) -> None:
        super().__init__([build_prompt(item) for item in items])
        self.items = items

    def score(
        self, generations: list[Generation], label: str, settings: GenerationSettings
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows = score_choices(self.items, generations)
        summary = summarize_mcq(rows)
        logger.info("%s: MCQ accuracy %d/%d", label, summary["correct"], summary["n"])
        return rows, summary

    def table(self, summaries: Mapping[str, Mapping[str, Any]]) -> str:
        return mcq_markdown_table(summaries)

    def write_reports(self, summaries: Summaries, output_dir: Path) -> None:
        text = "# Multiple-choice evaluation\n\n" + mcq_markdown_table(summaries) + "\n"
        write_text(output_dir / self.files["table"], text)
