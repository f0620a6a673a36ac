"""The main job: from nothing to a trained adapter and a report, on the embedded default.

    medgspo pipeline                                   # tiny Qwen3.5 model, bundled data, CPU
    medgspo pipeline --config recipes/qwen3.5-4b-medical/sft.yaml --run_dir runs/card   # the real model on a GPU

Stages today: build the tiny model (first use) -> SFT (LoRA) -> sample generations from the base model and from
the SFT adapter on held-out questions -> ``report.md``. Every file lands under ``--run_dir``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .configs import DataArguments, FormatArguments, MedModelConfig, MedSFTConfig, parse
from .inference import Generation
from .sft import EVAL_SPLIT_FILE, run_sft

logger = logging.getLogger(__name__)


@dataclass
class PipelineArguments:
    """Where the run goes and how many sample generations to show."""

    run_dir: str = field(default="runs/pipeline", metadata={"help": "Folder for every output of the run."})
    num_samples: int = field(default=3, metadata={"help": "Held-out questions to generate for, before and after."})
    sample_max_new_tokens: int = field(default=160, metadata={"help": "Token budget of each sample generation."})
    sample_seed: int = field(default=0, metadata={"help": "Sampling seed (the model card's sampling settings)."})


@dataclass
class PipelineReport:
    """Paths a user opens after the run."""

    run_dir: Path
    adapter_dir: Path
    report_path: Path
    samples: list[dict]


def sample_generations(model: str, adapter: Path | None, questions: list[str], args: PipelineArguments):
    """Generate once per question with the model card's sampling settings."""
    from .inference import generate, load_for_inference

    lm, tokenizer, chat_format = load_for_inference(model, adapter)
    return generate(
        lm, tokenizer, chat_format, questions,
        max_new_tokens=args.sample_max_new_tokens, do_sample=True, seed=args.sample_seed,
    )  # fmt: skip


def format_sample(gen: Generation, label: str) -> str:
    """Markdown for one generation: thinking and answer shown apart, and whether the format held."""
    status = "well-formed" if gen.split.well_formed else "NOT well-formed (no single `</think>` + answer)"
    thinking = gen.split.thinking[:400] or "(empty)"
    answer = gen.split.answer[:300] or "(no answer after `</think>`)"
    return f"**{label}** ({gen.n_tokens} tokens, {status})\n\n> 思考: {thinking}\n>\n> 回答: {answer}\n"


def write_report(path: Path, summary: dict, questions: list[str], before: list, after: list, references: list) -> None:
    """``report.md``: what SFT did (losses, data counts) and the sample generations before/after."""
    before_ok = sum(g.split.well_formed for g in before)
    after_ok = sum(g.split.well_formed for g in after)
    lines = [
        "# medgspo pipeline report",
        "",
        "## SFT",
        "",
        "| | value |",
        "|---|---|",
        f"| base model | `{summary['base_model']}` |",
        f"| records (train / held-out) | {summary['train']} / {summary['eval']} |",
        f"| invalid skipped / too long truncated / dropped | {summary['skipped_invalid']} / "
        f"{summary['truncated_too_long']} / {summary['dropped_too_long']} |",
        f"| optimizer steps | {summary['global_step']} |",
        f"| held-out loss before -> after | {_fmt(summary.get('eval_loss_before'))} -> "
        f"{_fmt(summary.get('eval_loss_after'))} |",
        f"| well-formed samples before -> after | {before_ok}/{len(before)} -> {after_ok}/{len(after)} |",
        "",
        "## Sample generations (held-out questions, temperature 1.0, top_p 0.95, top_k 20)",
        "",
    ]
    for i, (q, b, a, ref) in enumerate(zip(questions, before, after, references), start=1):
        lines += [f"### {i}. {q}", "", f"Reference: {ref}", "", format_sample(b, "base"), format_sample(a, "SFT")]
    path.write_text("\n".join(lines), encoding="utf-8")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run_pipeline(argv: list[str] | None = None) -> PipelineReport:
    """Parse the recipe and overrides, run every stage, write ``report.md``."""
    pipe_args, data_args, format_args, training_args, model_args = parse(
        (PipelineArguments, DataArguments, FormatArguments, MedSFTConfig, MedModelConfig), argv, prog="medgspo pipeline"
    )
    run_dir = Path(pipe_args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    training_args.output_dir = str(run_dir / "sft")

    # ---- stage 1: SFT -----------------------------------------------------------------------------------------
    sft = run_sft(data_args, format_args, training_args, model_args)

    # ---- sample generations before / after ----------------------------------------------------------------------
    held = [json.loads(line) for line in (sft.output_dir / EVAL_SPLIT_FILE).read_text(encoding="utf-8").splitlines()]
    held = held[: pipe_args.num_samples]
    questions, references = [r["Question"] for r in held], [r["Response"] for r in held]
    base = sft.summary["model_path"]
    before = sample_generations(base, None, questions, pipe_args)
    after = sample_generations(base, sft.output_dir, questions, pipe_args)
    samples = [
        {"question": q, "reference": ref, "base": b.text, "sft": a.text}
        for q, ref, b, a in zip(questions, references, before, after)
    ]
    (run_dir / "samples.json").write_text(json.dumps(samples, ensure_ascii=False, indent=2), encoding="utf-8")
    (run_dir / "pipeline_args.json").write_text(json.dumps(asdict(pipe_args), indent=2), encoding="utf-8")

    # ---- report -------------------------------------------------------------------------------------------------
    report_path = run_dir / "report.md"
    write_report(report_path, sft.summary, questions, before, after, references)
    return PipelineReport(run_dir, sft.output_dir, report_path, samples)
