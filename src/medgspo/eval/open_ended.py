"""Open-ended evaluation: each model answers held-out questions, the 5-tier judge scores the final answers.

    medgspo eval --model tiny --adapter runs/pipeline/sft --data runs/pipeline/sft/eval_split.jsonl

:class:`OpenTask` is this task for the shared loop (:func:`medgspo.eval.runner.evaluate`); the pipeline calls
:func:`run_eval` to compare base, SFT and GSPO on the held-out split. A completion that is not well formed (no single
closed ``</think>`` followed by a non-empty answer) scores :data:`~medgspo.judge.rubric.tiers.MALFORMED_SCORE` by rule,
without a judge call; every other answer of a model is judged in one concurrent ``judge_batch`` call. A judge
failure or abstention is ``None`` and counted, never turned into a score. One judge serves every model: it is
built before the first model loads (a missing API key fails fast) and keeps its accounting per model.

Files: ``generations.jsonl``, ``eval.json`` (summaries by name), ``eval.md`` (the table) and ``eval.png``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medgspo.data.records import TERM_FIELDS, DataError, Problem
from medgspo.eval.metrics import markdown_table, summarize_open
from medgspo.eval.plots import plot_summaries
from medgspo.eval.runner import (
    Evaluation,
    GenerationSettings,
    ModelSpec,
    Summaries,
    Task,
    completion_fields,
    evaluate,
    evaluate_all,
)
from medgspo.judge import JudgeConfig, JudgeStats, make_judge
from medgspo.judge.rubric.tiers import MALFORMED_SCORE, TIERS, label_for, tier_legend
from medgspo.modeling.generation import Generation
from medgspo.utils.io import write_text

logger = logging.getLogger(__name__)


def question_and_reference(record: Mapping[str, Any], index: int) -> tuple[str, str]:
    """``(question, reference)`` of a medical-o1 record (``Question``/``Response``) or a judge row
    (``question``/``reference``); :class:`~medgspo.data.records.DataError` names the record otherwise.

    >>> question_and_reference({"Question": " 问？ ", "Response": "答。"}, 0)
    ('问？', '答。')
    """
    for q_key, r_key in (("Question", "Response"), ("question", "reference")):
        question, reference = record.get(q_key), record.get(r_key)
        if isinstance(question, str) and question.strip() and isinstance(reference, str) and reference.strip():
            return question.strip(), reference.strip()
    message = "needs non-empty 'Question' and 'Response' (or 'question' and 'reference')"
    raise DataError([Problem(f"record {index}", None, "<record>", message)])


async def judge_rows(
    judge: Any, rows: list[dict[str, Any]], *, stats: JudgeStats | None = None, progress: Callable | None = None
) -> None:
    """Fill ``score``/``label``/``error``/``cached``/``judge_reason`` of each row in place.

    A row that is not well formed gets :data:`~medgspo.judge.rubric.tiers.MALFORMED_SCORE` by rule; all others are judged
    in one concurrent ``judge.judge_batch`` call (``stats`` receives its accounting, ``progress`` its progress).
    """
    for row in rows:
        if not row["well_formed"]:
            reason = "no answer after </think>" if not row["answer"] else "malformed think/answer layout"
            row.update(
                score=MALFORMED_SCORE,
                label=label_for(MALFORMED_SCORE),
                error=None,
                cached=False,
                judge_reason=f"rule: {reason}",
            )
    pending = [row for row in rows if row["well_formed"]]
    if not pending:
        return
    items = [
        {"question": r["question"], "reference": r["reference"], "completion": r["completion"]}
        | {name: r[name] for name in TERM_FIELDS if r.get(name)}  # optional key terms (the reference judge reads them)
        for r in pending
    ]
    judgments = await judge.judge_batch(items, stats=stats, progress=progress)
    for row, verdict in zip(pending, judgments, strict=True):
        row.update(
            score=verdict.score,
            label=verdict.label,
            error=verdict.error,
            cached=verdict.cached,
            judge_reason=verdict.reason,
        )


class OpenTask(Task):
    """Judge-scored free answers to ``records`` (medical-o1 records or ``question``/``reference`` rows).

    ``judge_config=None`` is the offline reference judge. Every record is checked when the task is made, before
    any model loads. The judge and its event loop live from :meth:`start` to :meth:`close`.
    """

    files = {"generations": "generations.jsonl", "summaries": "eval.json", "table": "eval.md", "plot": "eval.png"}

    def __init__(self, records: list[Mapping[str, Any]], judge_config: JudgeConfig | None = None) -> None:
        self.pairs = [question_and_reference(r, i) for i, r in enumerate(records)]
        self.terms = [{name: list(r[name]) for name in TERM_FIELDS if r.get(name)} for r in records]
        super().__init__([question for question, _ in self.pairs])
        self.config = judge_config or JudgeConfig(judge_backend="reference")
        self._judge: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._judge = make_judge(self.config)
        self._loop = asyncio.new_event_loop()

    def close(self) -> None:
        judge, loop, self._judge, self._loop = self._judge, self._loop, None, None
        if loop is not None:
            try:
                loop.run_until_complete(judge.aclose())  # releases connections and the cache file
            finally:
                loop.close()

    def score(
        self, generations: list[Generation], label: str, settings: GenerationSettings
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if self._loop is None:
            raise RuntimeError("OpenTask.score before start()")
        rows = [
            {"question": q, "reference": r, **terms, **completion_fields(g)}
            for (q, r), terms, g in zip(self.pairs, self.terms, generations, strict=True)
        ]
        stats = JudgeStats()
        judged = sum(row["well_formed"] for row in rows)
        with tqdm(total=judged, desc=f"{label}: judging", unit="answer", disable=not settings.show_progress) as bar:
            self._loop.run_until_complete(judge_rows(self._judge, rows, stats=stats, progress=bar.update))
        summary = summarize_open(rows, seed=settings.seed)
        summary["judge"] = {
            "backend": self.config.judge_backend,
            "model": getattr(self._judge, "judge_id", self.config.model),
            "calls": stats.calls,
            "cache_hits": stats.cache_hits,
            "cost_usd": round(stats.cost(self.config.prices), 6),
        }
        logger.info(
            "%s: mean score %s over %d judged of %d",
            label,
            "n/a" if summary["mean_score"] is None else f"{summary['mean_score']:+.2f}",
            summary["judged"],
            len(rows),
        )
        return rows, summary

    def table(self, summaries: Mapping[str, Mapping[str, Any]]) -> str:
        return markdown_table(summaries)

    def write_reports(self, summaries: Summaries, output_dir: Path) -> None:
        write_text(output_dir / self.files["table"], eval_markdown(summaries))
        plot_summaries(summaries, output_dir / self.files["plot"])


def eval_markdown(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """``eval.md``: the side-by-side table and what its columns mean."""
    judge = next(iter(summaries.values()), {}).get("judge", {})
    tiers = ", ".join(tier_legend(label) for label in TIERS)
    return (
        "# Open-ended evaluation\n\n"
        + markdown_table(summaries)
        + f"\n\nJudge: `{judge.get('backend', '?')}` ({judge.get('model', '?')}). Mean score over judged answers "
        f"with a 95% percentile-bootstrap interval; tiers {tiers}. A malformed completion scores "
        f"{MALFORMED_SCORE:+.1f} by rule, without a judge call. Judge failures and abstentions are left out of the "
        "mean.\n"
    )


def run_eval(
    models: list[ModelSpec],
    records: list[Mapping[str, Any]],
    judge_config: JudgeConfig | None,
    output_dir: str | Path,
    **generation: Any,
) -> Summaries:
    """Evaluate each ``(name, model, adapter)`` on ``records`` (``generation``: :class:`GenerationSettings`
    fields) and write the files into ``output_dir``; returns the summaries."""
    return evaluate(OpenTask(records, judge_config), models, output_dir, GenerationSettings(**generation))


def evaluate_open(
    models: list[ModelSpec],
    records: list[Mapping[str, Any]],
    judge_config: JudgeConfig | None,
    output_dir: str | Path,
    **generation: Any,
) -> Evaluation:
    """:func:`run_eval`, returning the scored rows too (the pipeline's entry point: its report reads both)."""
    return evaluate_all(OpenTask(records, judge_config), models, output_dir, GenerationSettings(**generation))
