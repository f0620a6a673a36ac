"""What the main job reports: ``summary.json`` (machine-readable), ``report.md`` and the samples (pure, no models).

* :func:`summary_document`: ``{"wall_s", "models": {"base"|"sft"|"gspo": {"heldout"|"seen": {"n",
  "format_compliance", "mean_score", "ci": [lo, hi], "distinct_answers"}}}, "paired": {split: {"n", "mean",
  "ci"}}}``, the numbers the report prints (``paired``: GSPO minus SFT, question by question, the headline);
* the findings (:mod:`medgspo.pipeline.findings`): plain statements of what each stage did, including when it
  did nothing visible or collapsed;
* :func:`pick_samples`: one representative question per split (the most typical, not the best);
* :func:`readable`: completion text as a person can read it (no U+FFFD from a half character);
* :func:`write_report`: ``report.md`` with the machine, the seeds, the tables, the plots and the samples.
"""

from __future__ import annotations

import datetime
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.eval.metrics import markdown_table
from medgspo.pipeline.findings import findings, paired_scores
from medgspo.utils.io import write_text

SPLITS = ("heldout", "seen")
SPLIT_TITLES = {
    "heldout": "held-out questions (never trained on)",
    "seen": "seen questions (a fixed sample of the prompts GSPO trained on)",
}
MODEL_TITLES = {"base": "before SFT (base model)", "sft": "after SFT", "gspo": "after GSPO"}
SAMPLE_RULE = (
    "the question on which the most models get their most common kind of verdict on that split (ties: the first "
    "in order), so it shows a typical answer of each model, not its best"
)
REPLACEMENT = "\ufffd"


@dataclass
class ReportInputs:
    """Everything ``report.md`` shows, as the pipeline's stages returned it."""

    run_dir: Path
    wall_s: float
    machine: dict[str, Any]
    seeds: dict[str, int]
    sft: dict[str, Any]  # the stages' summaries (``sft_summary.json`` ...)
    summaries: dict[str, dict[str, dict[str, Any]]]  # split -> model -> evaluation summary
    generations: dict[str, list[dict[str, Any]]]  # split -> scored rows
    samples: dict[str, dict | None]
    eval_max_new_tokens: int
    eval_sample: bool
    tiny: bool = False
    pretrain: dict[str, Any] | None = None
    gspo: dict[str, Any] | None = None
    gspo_rows: list[dict] = field(default_factory=list)  # GSPO's logged metrics


# ---- summary.json -----------------------------------------------------------------------------------------------
def split_summary(s: Mapping[str, Any]) -> dict[str, Any]:
    """The five numbers of one model on one split, from :func:`medgspo.eval.metrics.summarize_open`.

    >>> split_summary({"n": 2, "format_compliance": 0.5, "mean_score": -1.0, "score_ci_low": -1.0,
    ...                "score_ci_high": -1.0, "distinct_answers": 1.0, "judged": 2})
    {'n': 2, 'format_compliance': 0.5, 'mean_score': -1.0, 'ci': [-1.0, -1.0], 'distinct_answers': 1.0}
    """
    return {
        "n": s["n"],
        "format_compliance": s["format_compliance"],
        "mean_score": s["mean_score"],
        "ci": [s["score_ci_low"], s["score_ci_high"]],
        "distinct_answers": s["distinct_answers"],
    }


def summary_document(
    wall_s: float,
    summaries: Mapping[str, Mapping[str, Mapping[str, Any]]],
    generations: Mapping[str, list[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """``summary.json`` from the per-split evaluation summaries (``{split: {model: summary}}``) and, from the
    per-split generation rows, ``paired``: GSPO minus SFT question by question (:func:`paired_scores`) per split.

    >>> rows = [{"model": m, "question": "q", "score": s} for m, s in [("sft", 0.5), ("gspo", 2.0)]]
    >>> summary_document(1.0, {}, {"seen": rows})["paired"]
    {'seen': {'n': 1, 'mean': 1.5, 'ci': [1.5, 1.5]}}
    """
    models: dict[str, dict[str, Any]] = {}
    for split, by_model in summaries.items():
        for name, s in by_model.items():
            models.setdefault(name, {})[split] = split_summary(s)
    paired = {split: paired_scores(rows) for split, rows in (generations or {}).items()}
    return {"wall_s": round(wall_s, 1), "models": models, "paired": paired}


def machine_info() -> dict[str, Any]:
    """Cores, torch threads and versions of the machine the run measured."""
    import platform

    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }


# ---- samples ------------------------------------------------------------------------------------------------------
def readable(text: str) -> str:
    """``text`` without the replacement characters a byte-level tokenizer leaves where a model emitted part of a
    multi-byte character (or where generation stopped inside one); the count is said at the end.

    >>> readable("首选\\ufffd\\ufffd利尿剂"), readable("肺炎")
    ('首选利尿剂 [2 undecodable bytes dropped]', '肺炎')
    """
    dropped = text.count(REPLACEMENT)
    if not dropped:
        return text
    return f"{text.replace(REPLACEMENT, '')} [{dropped} undecodable byte{'s' if dropped > 1 else ''} dropped]"


def _outcome(row: Mapping[str, Any]) -> str:
    return row.get("label") or ("abstained" if str(row.get("error") or "").startswith("undecided") else "none")


def pick_samples(rows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One representative question of a split (:data:`SAMPLE_RULE`) from its ``generations.jsonl`` rows, with
    each model's answer.

    >>> rows = [{"model": m, "question": q, "reference": "r", "label": lab, "answer": q, "thinking": "",
    ...          "well_formed": True, "score": None} for m, q, lab in
    ...         [("sft", "q1", "E"), ("sft", "q2", "E"), ("sft", "q3", "A"), ("gspo", "q1", "A"),
    ...          ("gspo", "q2", "E"), ("gspo", "q3", "E")]]
    >>> pick_samples(rows)["question"]  # sft's usual verdict is E, gspo's is E: q2 has both
    'q2'
    """
    if not rows:
        return None
    usual = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        usual[model] = Counter(_outcome(r) for r in rows if r["model"] == model).most_common(1)[0][0]
    by_question: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_question.setdefault(row["question"], []).append(row)
    question = max(by_question, key=lambda q: sum(_outcome(r) == usual[r["model"]] for r in by_question[q]))
    first = by_question[question][0]
    models = {
        r["model"]: {
            "thinking": readable(r["thinking"]),
            "answer": readable(r["answer"]),
            "well_formed": r["well_formed"],
            "score": r.get("score"),
            "verdict": _outcome(r),
        }
        for r in by_question[question]
    }
    return {
        "question": question,
        "reference": first["reference"],
        "key_terms": first.get("key_terms") or [],
        "models": models,
    }


def format_sample(name: str, gen: Mapping[str, Any]) -> str:
    """Markdown for one model's answer: thinking and answer apart, the format and the verdict."""
    thinking = gen["thinking"][:200] or "(empty)"
    answer = gen["answer"][:300] or "(no answer after `</think>`)"
    status = "well-formed" if gen["well_formed"] else "not well-formed"
    score = "no score" if gen["score"] is None else f"{gen['score']:+.1f}"
    return f"**{MODEL_TITLES.get(name, name)}** ({status}; judge: {gen['verdict']}, {score})\n\n> 思考: {thinking}\n>\n> 回答: {answer}\n"


# ---- report.md ----------------------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _header(ctx: ReportInputs) -> list[str]:
    m, seeds = ctx.machine, ctx.seeds
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    seed_text = ", ".join(f"{k} {v}" for k, v in seeds.items())
    return [
        "# medgspo pipeline report",
        "",
        f"Run folder: `{ctx.run_dir}`; {today}; wall time {ctx.wall_s:.0f} s.",
        "",
        f"Machine: {m['cpu_count']} CPU cores, torch {m['torch']} with {m['torch_threads']} threads, "
        f"CUDA {'yes' if m['cuda'] else 'no'}, Python {m['python']} ({m['platform']}). Seeds: {seed_text}. "
        "Measured on this machine only: a different core count, thread count or library build changes the "
        "floating-point arithmetic and so the sampled rollouts; figures are not claimed to repeat exactly elsewhere.",
        "",
    ]


def _pretrain_table(pre: Mapping[str, Any] | None) -> list[str]:
    if not pre:
        return []
    return [
        "## Pretraining (the tiny model only)",
        "",
        "| | value |",
        "|---|---|",
        f"| from | `{pre['base_model']}` (random weights), every parameter trained on plain text |",
        f"| records / cut at the length limit | {pre['records']} / {pre['truncated_too_long']} (the ones SFT uses: "
        "question, opening of the reasoning, answer) |",
        f"| optimizer steps | {pre['global_step']} |",
        f"| training loss (mean) / last token accuracy | {_fmt(pre.get('train_loss'))} / {_fmt(pre.get('final_token_accuracy'))} |",
        "",
    ]


def _stage_tables(ctx: ReportInputs) -> list[str]:
    sft, gspo = ctx.sft, ctx.gspo
    lines = _pretrain_table(ctx.pretrain) + [
        "## SFT",
        "",
        "| | value |",
        "|---|---|",
        f"| base model | `{sft['base_model']}` |",
        f"| records (train / held-out) | {sft['train']} / {sft['eval']} |",
        f"| invalid skipped / too long truncated / dropped | {sft['skipped_invalid']} / {sft['truncated_too_long']} / {sft['dropped_too_long']} |",
        f"| optimizer steps | {sft['global_step']} |",
        f"| held-out loss before -> after | {_fmt(sft.get('eval_loss_before'))} -> {_fmt(sft.get('eval_loss_after'))} |",
        "",
    ]
    if not gspo:
        return lines
    js = gspo["judge_stats"] or {}
    lines += [
        "## GSPO",
        "",
        "| | value |",
        "|---|---|",
        f"| optimizer steps / training prompts | {gspo['global_step']} / {gspo['train_prompts']} |",
        f"| config | {', '.join(f'{k}={v}' for k, v in gspo['config'].items())} |",
        f"| reward weights | {gspo['reward_weights']} |",
        f"| judge | {gspo['judge']['backend']} `{gspo['judge']['model']}` |",
        f"| judge calls / cache hits / failures | {js.get('calls')} / {js.get('cache_hits')} / {js.get('failures')} |",
        "",
    ]
    lines += [f"> {note}" for note in gspo["clipping_notes"]] + [""]
    lines += [f"![{Path(p).stem}]({Path(p).relative_to(ctx.run_dir)})" for p in gspo["plots"]] + [""]
    return lines


def write_report(path: Path, ctx: ReportInputs) -> Path:
    """``report.md``: machine and seeds, findings, the evaluation per split, the stages, the samples."""
    lines = _header(ctx)
    lines += (
        ["## What happened", ""] + [f"- {n}" for n in findings(ctx.summaries, ctx.gspo_rows, ctx.generations)] + [""]
    )
    if ctx.tiny:
        pretrained = (
            "first pretrained for seconds on the plain text of the records SFT uses (that is the base row: it "
            "knows the material but not the chat format), then "
            if ctx.pretrain
            else ""
        )
        lines += [
            "The embedded model is a tiny random-init Qwen3.5-architecture model, "
            f"{pretrained}trained for minutes on a CPU: it shows the mechanics of each stage, not medical "
            "competence. On seen questions GSPO can only sharpen what SFT made possible; held-out questions show "
            "whether anything carried over.",
            "",
        ]
    mode = "sampled with the card's settings" if ctx.eval_sample else "greedy"
    for split, by_model in ctx.summaries.items():
        lines += [f"## Evaluation on {SPLIT_TITLES[split]}", "", markdown_table(by_model), ""]
        lines += [f"![eval {split}](eval/{split}/eval.png)", ""]
    lines += [
        f"Answers {mode}, at most {ctx.eval_max_new_tokens} new tokens. Mean judged score with a 95% "
        "percentile-bootstrap interval over judged answers; an abstention of the offline judge is left out of the "
        "mean in evaluation and counted (in GSPO training it scores -1.0, see the recipe).",
        "",
    ]
    lines += _stage_tables(ctx)
    for split, sample in ctx.samples.items():
        if sample is None:
            continue
        lines += [f"## A {split} question", "", f"Picked as {SAMPLE_RULE}.", ""]
        lines += [f"**Q:** {sample['question']}", "", f"**Reference:** {sample['reference']}", ""]
        if sample["key_terms"]:
            lines += [f"**Key terms:** {', '.join(sample['key_terms'])}", ""]
        lines += [format_sample(name, gen) for name, gen in sample["models"].items()]
    return write_text(path, "\n".join(lines))
