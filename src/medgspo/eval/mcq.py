"""Multiple-choice evaluation: ask each model for one letter, read it with the strict rule, report accuracy.

    medgspo eval --task mcq                                   # the bundled data/mcq_zh.jsonl on the tiny model
    medgspo eval --task mcq --data MedQA/.../Mainland/test.jsonl --data CMMLU/data/test --subjects medical \\
        --model Qwen/Qwen3.5-4B --adapter none runs/sft runs/gspo --sample --num_samples 4

Items come from :mod:`medgspo.eval.benchmarks` (one :class:`~medgspo.eval.benchmarks.Benchmark` per ``--data``),
the letter from :func:`medgspo.eval.extraction.extract_choice`, read after ``</think>`` only (Qwen3.5's template
opens the thinking block itself, so the prompt asks for thinking first and the letter last). :class:`MCQTask` asks
every question ``num_samples`` times in one pass per model (:func:`medgspo.eval.runner.evaluate`) and writes
``mcq_generations.jsonl``, ``mcq.json``, ``mcq.md`` and ``mcq_table.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medgspo.eval.benchmarks import Benchmark
from medgspo.eval.extraction import extract_choice
from medgspo.eval.layouts import MCQItem
from medgspo.eval.mcq_metrics import results_rows, results_table, subject_table, summarize_benchmark
from medgspo.eval.runner import GenerationSettings, Summaries, Task, completion_fields
from medgspo.modeling.generation import Generation
from medgspo.utils.io import write_json, write_text

logger = logging.getLogger(__name__)

PROMPT_INSTRUCTION = "以下是一道单项选择题，只有一个正确答案。"
PROMPT_REQUEST = "请先思考，最后只给出正确选项的字母（{letters}中的一个），格式为“答案：X”。"
# HuatuoGPT-o1's evaluation prompt (evaluation/eval.py, default, read 2026-11-29), for numbers next to theirs.
HUATUO_PROMPT = "Please answer the following multiple-choice question:\n{question}\n{options}"
PROMPT_STYLES = ("medgspo", "huatuo")


def build_prompt(item: MCQItem, style: str = "medgspo") -> str:
    """The user turn: the question, the options one per line (``A. text``), and (ours) a request for the letter.

    >>> print(build_prompt(MCQItem("首选药物是（　）", {"A": "青霉素", "B": "红霉素"}, "A")))
    以下是一道单项选择题，只有一个正确答案。
    <BLANKLINE>
    首选药物是（　）
    <BLANKLINE>
    A. 青霉素
    B. 红霉素
    <BLANKLINE>
    请先思考，最后只给出正确选项的字母（A、B中的一个），格式为“答案：X”。
    >>> print(build_prompt(MCQItem("首选药物是（　）", {"A": "青霉素", "B": "红霉素"}, "A"), "huatuo"))
    Please answer the following multiple-choice question:
    首选药物是（　）
    A. 青霉素
    B. 红霉素
    """
    options = "\n".join(f"{letter}. {text}" for letter, text in item.options.items())
    if style == "huatuo":
        return HUATUO_PROMPT.format(question=item.question, options=options)
    request = PROMPT_REQUEST.format(letters="、".join(item.options))
    return f"{PROMPT_INSTRUCTION}\n\n{item.question}\n\n{options}\n\n{request}"


def score_choice(item: MCQItem, generation: Generation) -> dict[str, Any]:
    """One answer's row: the completion's fields, the extracted ``prediction`` (``None`` without a single readable
    letter in the text after ``</think>``) and whether it is ``correct``."""
    prediction = extract_choice(generation.split.answer, item.letters) if generation.split.answer else None
    return {
        "question": item.question,
        "subject": item.subject,
        "source": item.source,
        "line": item.line,
        "gold": item.answer,
        **completion_fields(generation),
        "prediction": prediction,
        "correct": prediction == item.answer,
    }


class MCQTask(Task):
    """Single-answer multiple-choice ``benchmarks``, each question asked ``num_samples`` times, scored by letter."""

    files = {
        "generations": "mcq_generations.jsonl",
        "summaries": "mcq.json",
        "table": "mcq.md",
        "results": "mcq_table.json",
    }

    def __init__(self, benchmarks: list[Benchmark], num_samples: int = 1, prompt_style: str = "medgspo") -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (got {num_samples})")
        self.benchmarks = benchmarks
        self.num_samples = num_samples
        self.prompt_style = prompt_style
        # One slot per prompt: (sample, benchmark index, item index); sample 0 of everything first.
        self.slots = [
            (k, b, i)
            for k in range(num_samples)
            for b, bench in enumerate(benchmarks)
            for i in range(len(bench.items))
        ]
        prompts = [build_prompt(benchmarks[b].items[i], prompt_style) for _, b, i in self.slots]
        super().__init__(prompts)

    def score(
        self, generations: list[Generation], label: str, settings: GenerationSettings
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows = []
        for (k, b, i), generation in zip(self.slots, generations, strict=True):
            bench = self.benchmarks[b]
            rows.append({"benchmark": bench.name, "item": i, "sample": k, **score_choice(bench.items[i], generation)})
        per_bench = {
            b.name: summarize_benchmark([r for r in rows if r["benchmark"] == b.name]) for b in self.benchmarks
        }
        for name, s in per_bench.items():
            logger.info(
                "%s on %s: accuracy %.3f over %d question(s) x %d", label, name, s["accuracy"], s["n"], s["samples"]
            )
        summary = {"benchmarks": per_bench, "num_samples": self.num_samples, "prompt_style": self.prompt_style}
        return rows, summary

    def table(self, summaries: Mapping[str, Mapping[str, Any]]) -> str:
        return results_table(results_rows(summaries))

    def report(self, summaries: Mapping[str, Mapping[str, Any]]) -> str:
        """``mcq.md``: the results table, a subject table per benchmark that has subjects, and the data notes."""
        first = next(iter(summaries.values()), {})
        decoding = "sampled with the card's settings" if first.get("do_sample") else "greedy"
        parts = [
            "# Multiple-choice evaluation",
            f"Prompt `{self.prompt_style}`, {decoding}, {self.num_samples} sample(s) per question, "
            f"max_new_tokens {first.get('max_new_tokens')}. Accuracy is the mean over samples with a 95% Wilson "
            "interval over the questions; an unreadable answer (no single letter after `</think>`) counts as wrong.",
            results_table(results_rows(summaries)),
        ]
        for bench in self.benchmarks:
            table = subject_table(bench.name, summaries)
            if table:
                parts += [f"## {bench.name}: per subject", table]
        parts.append("## Data")
        data = []
        for bench in self.benchmarks:
            note = f"* **{bench.name}**: `{bench.source}` ({bench.layout} layout), {len(bench.items)} question(s)"
            data.append(note + (f", {bench.skipped_multi} multi-answer skipped" if bench.skipped_multi else ""))
            if bench.key_mismatches:
                data.append(
                    f"  * {len(bench.key_mismatches)} row(s) where `options[answer_idx]` != `answer`, graded by "
                    "`answer_idx` (all of them in mcq_table.json):"
                )
                data += [f"    * {p}" for p in bench.key_mismatches[:20]]
        parts.append("\n".join(data))
        return "\n\n".join(parts) + "\n"

    def write_reports(self, summaries: Summaries, output_dir: Path) -> None:
        write_text(output_dir / self.files["table"], self.report(summaries))
        data = {b.name: b.notes() for b in self.benchmarks}
        write_json(output_dir / self.files["results"], {"results": results_rows(summaries), "benchmarks": data})
