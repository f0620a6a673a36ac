"""The ``medgspo pipeline`` command: run the job, print a representative answer of each model, the table's
numbers and the paths of ``report.md`` and ``summary.json``."""

from __future__ import annotations

from medgspo.pipeline.job import PIPELINE_ARGUMENTS, run_pipeline
from medgspo.pipeline.report import MODEL_TITLES, SAMPLE_RULE
from medgspo.utils.cli import Command


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def paired_line(split: str, paired: dict | None) -> str:
    """The headline: GSPO minus SFT on the same questions, with its 95% interval and whether it lies above 0.

    >>> paired_line("seen", {"n": 31, "mean": 0.95, "ci": [0.48, 1.44]})
    'GSPO - SFT, paired on the 31 seen questions both were judged on: +0.95 [+0.48, +1.44] (above 0)'
    """
    if paired is None:
        return f"GSPO - SFT, paired on {split} questions: no question judged for both"
    low, high = paired["ci"]
    verdict = "above 0" if low > 0 else "below 0" if high < 0 else "includes 0"
    return (
        f"GSPO - SFT, paired on the {paired['n']} {split} questions both were judged on: "
        f"{paired['mean']:+.2f} [{low:+.2f}, {high:+.2f}] ({verdict})"
    )


def run_command(argv: list[str]) -> int:
    """``medgspo pipeline``: run the job, print a sample of each model, the summary and the report's path."""
    report = run_pipeline(argv)
    for split, sample in report.samples.items():
        if sample is None:
            continue
        print(f"\n=== A {split} question ({SAMPLE_RULE}) ===")
        print(f"Question:  {sample['question']}\nReference: {sample['reference']}")
        for name, gen in sample["models"].items():
            score = "no score" if gen["score"] is None else f"{gen['score']:+.1f}"
            verdict = f"judge: {gen['verdict']}, {score}"
            print(f"\n--- {MODEL_TITLES.get(name, name)} ({verdict}) ---")
            print(f"[思考] {gen['thinking'][:200]}\n[回答] {gen['answer'][:300] or '(no answer after </think>)'}")
    print("\nmodel  split    n   format  mean score [95% CI]      distinct")
    for name, splits in report.summary["models"].items():
        for split, s in splits.items():
            lo, hi = s["ci"]
            distinct = "n/a" if s["distinct_answers"] is None else f"{s['distinct_answers']:.0%}"
            print(
                f"{name:<6} {split:<8} {s['n']:>3} {s['format_compliance']:>7.0%}  "
                f"{_score(s['mean_score']):>6} [{_score(lo)}, {_score(hi)}]  {distinct:>8}"
            )
    for split, paired in report.summary.get("paired", {}).items():
        print(paired_line(split, paired))
    print(f"\nDone in {report.summary['wall_s']:.0f} s. Adapter: {report.adapter_dir}")
    print(f"Report:  {report.report_path}")
    print(f"Summary: {report.summary_path}")
    return 0


COMMANDS = [
    Command(
        "pipeline",
        PIPELINE_ARGUMENTS,
        run_command,
        "The main job: tiny model -> plain-text pretraining (the tiny model only) -> SFT -> GSPO -> evaluation on "
        "held-out and seen questions -> report.md and summary.json. `--pretrain.FIELD v` / `--sft.FIELD v` / "
        "`--gspo.FIELD v` override one stage's recipe; --model_name_or_path, --dataset_name, --eval_size, "
        "--split_seed, --seed go to every stage.",
        own_parsing=True,
    )
]
