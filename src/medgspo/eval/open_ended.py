"""Open-ended evaluation: generate answers to held-out questions, judge them with the 5-tier judge, report.

    medgspo eval --model tiny --adapter runs/pipeline/sft --data runs/pipeline/sft/eval_split.jsonl

Used by ``medgspo eval`` (:mod:`medgspo.eval.cli`) and by the pipeline, which compares base, SFT and GSPO models
on the held-out split. Per model: batched generation (:func:`medgspo.utils.models.generate`), then one concurrent
``judge_batch`` call over all answers, then :func:`medgspo.eval.metrics.summarize_open`. A completion that is not well
formed (no single ``</think>`` followed by a non-empty answer) scores -1.0 without a judge call, the rubric's
"incoherent or empty" tier; a judge failure or abstention is ``None`` and counted, never turned into a score.

:func:`run_eval` writes ``generations.jsonl``, ``eval.json``, ``eval.md`` and ``eval.png`` into one folder (with the
atomic writers of :mod:`medgspo.data.records`, which the multiple-choice evaluation uses too).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from pathlib import Path
from typing import Any

from medgspo.eval.metrics import TIER_KEYS, markdown_table, summarize_open
from medgspo.judge import JudgeConfig, Judgment, make_judge
from medgspo.utils.io import write_json, write_jsonl

logger = logging.getLogger(__name__)

MALFORMED_SCORE = -1.0  # the rubric's tier E: incoherent, broken or empty


# ---- files --------------------------------------------------------------------------------------------------------
def check_names(models: list[tuple[str, str, str | None]]) -> None:
    """Model names label table rows and generation lines, so they must be unique and non-empty."""
    names = [m[0] for m in models]
    if not models:
        raise ValueError("no models to evaluate")
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"model names must be unique and non-empty, got {names}")


# ---- generation ---------------------------------------------------------------------------------------------------
def check_generation_args(batch_size: int, max_new_tokens: int) -> None:
    """``ValueError`` naming the option to change."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {batch_size})")
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1 (got {max_new_tokens})")


def generate_answers(
    model: str,
    adapter: str | None,
    questions: list[str],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    desc: str = "generating",
    show_progress: bool = True,
) -> list[Any]:
    """Load ``model`` (+ ``adapter``), generate one completion per question with a progress bar over batches, and
    release the model. Batch ``i`` is seeded with ``seed + i`` (sampling only; greedy ignores the seed)."""
    import torch
    from tqdm.auto import tqdm

    from medgspo.utils.generation import generate
    from medgspo.utils.models import load_for_inference

    check_generation_args(batch_size, max_new_tokens)
    lm, tokenizer, chat_format = load_for_inference(model, adapter)
    results = []
    try:
        starts = range(0, len(questions), batch_size)
        for i, start in enumerate(tqdm(starts, desc=desc, unit="batch", disable=not show_progress)):
            chunk = questions[start : start + batch_size]
            results += generate(
                lm, tokenizer, chat_format, chunk, max_new_tokens=max_new_tokens, batch_size=batch_size,
                do_sample=do_sample, seed=seed + i, **(sampling or {}),
            )  # fmt: skip
    finally:
        del lm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


# ---- judging ------------------------------------------------------------------------------------------------------
def question_and_reference(record: dict[str, Any], index: int) -> tuple[str, str]:
    """``(question, reference)`` of a medical-o1 record (``Question``/``Response``) or a judge row
    (``question``/``reference``); ``ValueError`` names the record otherwise."""
    for q_key, r_key in (("Question", "Response"), ("question", "reference")):
        question, reference = record.get(q_key), record.get(r_key)
        if isinstance(question, str) and question.strip() and isinstance(reference, str) and reference.strip():
            return question.strip(), reference.strip()
    raise ValueError(f"record {index}: needs non-empty 'Question' and 'Response' (or 'question' and 'reference')")


async def _judge_all(judge: Any, items: list[dict[str, str]], desc: str, show_progress: bool) -> list[Judgment]:
    from tqdm.auto import tqdm

    try:
        if not items:
            return []
        with tqdm(total=len(items), desc=desc, unit="answer", disable=not show_progress) as bar:
            return await judge.judge_batch(items, progress=bar.update)
    finally:
        await judge.aclose()


def judge_rows(judge: Any, rows: list[dict[str, Any]], *, desc: str = "judging", show_progress: bool = True) -> None:
    """Fill ``score``/``label``/``error``/``cached``/``judge_reason`` of each row in place: malformed completions
    get -1.0 by rule, all others are judged in one concurrent ``judge_batch`` call. The judge is closed after."""
    pending = [i for i, row in enumerate(rows) if row["well_formed"]]
    for row in rows:
        if not row["well_formed"]:
            reason = "no answer after </think>" if not row["answer"] else "malformed think/answer layout"
            row.update(score=MALFORMED_SCORE, label="E", error=None, cached=False, judge_reason=f"rule: {reason}")
    items = [{"question": rows[i]["question"], "reference": rows[i]["reference"], "completion": rows[i]["completion"]}
             for i in pending]  # fmt: skip
    judgments = asyncio.run(_judge_all(judge, items, desc, show_progress))
    for i, verdict in zip(pending, judgments, strict=True):
        rows[i].update(score=verdict.score, label=verdict.label, error=verdict.error, cached=verdict.cached,
                       judge_reason=verdict.reason)  # fmt: skip


def evaluate_open(
    model: str,
    adapter: str | None,
    records: list[dict[str, Any]],
    judge_config: JudgeConfig | None,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    name: str | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate, judge and summarise one model on ``records``; returns ``(summary, rows)``.

    ``judge_config=None`` means the offline reference judge. The judge is built before generation, so a missing
    API key fails fast (:class:`medgspo.judge.JudgeFatalError`). Rows hold question, reference, completion,
    thinking, answer, well_formed, n_tokens, score, label, error, cached and judge_reason; the summary is
    :func:`medgspo.eval.metrics.summarize_open` plus the model, adapter, generation settings and judge accounting.
    """
    config = judge_config or JudgeConfig(backend="reference")
    pairs = [question_and_reference(r, i) for i, r in enumerate(records)]
    check_generation_args(batch_size, max_new_tokens)
    judge = make_judge(config)
    label = name or model
    try:
        gens = generate_answers(
            model, adapter, [q for q, _ in pairs], batch_size=batch_size, max_new_tokens=max_new_tokens,
            do_sample=do_sample, seed=seed, sampling=sampling, desc=f"{label}: generating",
            show_progress=show_progress,
        )  # fmt: skip
    except BaseException:
        asyncio.run(judge.aclose())  # release the judge's cache file before the error goes up
        raise
    rows = [
        {"question": q, "reference": r, "completion": g.text, "thinking": g.split.thinking, "answer": g.split.answer,
         "well_formed": g.split.well_formed, "n_tokens": g.n_tokens}
        for (q, r), g in zip(pairs, gens, strict=True)
    ]  # fmt: skip
    judge_rows(judge, rows, desc=f"{label}: judging", show_progress=show_progress)
    summary = summarize_open(rows, seed=seed)
    summary.update(
        model=model, adapter=adapter, max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed,
        hit_token_limit=sum(r["n_tokens"] >= max_new_tokens for r in rows),
        judge=_judge_info(judge, config),
    )  # fmt: skip
    logger.info("%s: mean score %s over %d judged of %d", label, summary["mean_score"], summary["judged"], len(rows))
    return summary, rows


def _judge_info(judge: Any, config: JudgeConfig) -> dict[str, Any]:
    stats = judge.stats
    return {"backend": config.backend, "model": getattr(judge, "judge_id", config.model), "calls": stats.calls,
            "cache_hits": stats.cache_hits, "cost_usd": round(stats.cost(config.prices), 6)}  # fmt: skip


# ---- several models -------------------------------------------------------------------------------------------
def run_eval(
    models: list[tuple[str, str, str | None]],
    records: list[dict[str, Any]],
    judge_config: JudgeConfig | None,
    output_dir: str | Path,
    **gen: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate each ``(name, model, adapter)`` with :func:`evaluate_open` (``gen``: its keyword arguments) and
    write ``generations.jsonl`` (one line per model and question, with a ``model`` field), ``eval.json`` (the
    summaries by name), ``eval.md`` (the table) and ``eval.png`` (the plot). Returns the summaries."""
    check_names(models)
    out = Path(output_dir)
    summaries, all_rows = {}, []
    for name, model, adapter in models:
        summary, rows = evaluate_open(model, adapter, records, judge_config, name=name, **gen)
        summaries[name] = summary
        all_rows += [{"model": name, **row} for row in rows]
        write_jsonl(out / "generations.jsonl", all_rows)  # a crash in a later model keeps the finished ones
    write_json(out / "eval.json", summaries)
    (out / "eval.md").write_text(eval_markdown(summaries), encoding="utf-8")
    plot_summaries(summaries, out / "eval.png")
    return summaries


def eval_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """``eval.md``: the side-by-side table and what its columns mean."""
    first = next(iter(summaries.values()), {})
    judge = first.get("judge", {})
    return (
        "# Open-ended evaluation\n\n"
        + markdown_table(summaries)
        + f"\n\nJudge: `{judge.get('backend', '?')}` ({judge.get('model', '?')}). Mean score over judged answers "
        "with a 95% percentile-bootstrap interval; tiers +2.0 same meaning, +0.5 reasonable paraphrase, 0.0 outside "
        "medicine, -0.5 contradicts, -1.0 incoherent or malformed (scored by rule without a judge call). "
        "Judge failures and abstentions are left out of the mean.\n"
    )


def plot_summaries(summaries: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """``eval.png``: mean score with its 95% CI, format compliance, and the tier distribution per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(summaries)
    xs = list(range(len(names)))
    fig = Figure(figsize=(4 + 2.2 * len(names), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_score, ax_format, ax_tiers = fig.subplots(1, 3)
    means, errors = _score_bars(list(summaries.values()))
    ax_score.bar(xs, means, yerr=errors, capsize=4, color="#4c72b0")
    ax_score.set(title="mean judge score (95% CI)", ylim=(-1.05, 2.05))
    ax_score.axhline(0, color="black", linewidth=0.6)
    compliance = [s["format_compliance"] or 0.0 for s in summaries.values()]
    ax_format.bar(xs, compliance, color="#55a868")
    ax_format.set(title="format compliance", ylim=(0, 1.05))
    _stacked_tiers(ax_tiers, xs, list(summaries.values()))
    for ax in (ax_score, ax_format, ax_tiers):
        ax.set_xticks(xs, names, rotation=20, ha="right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _score_bars(summaries: list[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Bar heights and asymmetric error bars (below, above) of the mean scores; no judged answer draws nothing."""
    means, below, above = [], [], []
    for s in summaries:
        judged = s["mean_score"] is not None
        means.append(s["mean_score"] if judged else math.nan)
        below.append(s["mean_score"] - s["score_ci_low"] if judged else 0.0)
        above.append(s["score_ci_high"] - s["mean_score"] if judged else 0.0)
    return means, [below, above]


def _stacked_tiers(ax: Any, xs: list[int], summaries: list[dict[str, Any]]) -> None:
    colors = ["#2ca02c", "#98df8a", "#c7c7c7", "#ff9896", "#d62728", "#ffffff"]
    bottoms = [0.0] * len(xs)
    segments = [(key, [s["tier_counts"].get(key, 0) for s in summaries]) for key in TIER_KEYS]
    segments.append(("judge failed", [s["judge_failures"] for s in summaries]))
    for (label, counts), color in zip(segments, colors, strict=True):
        fractions = [c / s["n"] if s["n"] else 0.0 for c, s in zip(counts, summaries, strict=True)]
        ax.bar(xs, fractions, bottom=bottoms, color=color, edgecolor="#555555", linewidth=0.4, label=label)
        bottoms = [b + f for b, f in zip(bottoms, fractions, strict=True)]
    ax.set(title="tier distribution", ylim=(0, 1.05))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
