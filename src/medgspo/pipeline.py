"""The main job: from nothing to trained adapters, an evaluation and a report.

    medgspo pipeline                      # tiny Qwen3.5 model, bundled data, offline reference judge, CPU
    medgspo pipeline --judge_backend openai --judge_model deepseek-chat        # DeepSeek as the judge
    medgspo pipeline --sft_config recipes/qwen3.5-4b-medical/sft.yaml \\
                     --gspo_config recipes/qwen3.5-4b-medical/gspo.yaml --run_dir runs/card   # the card, on a GPU

Stages: build the tiny model (first use) -> SFT (LoRA) -> GSPO from the SFT adapter with the judge reward ->
evaluate base, SFT and GSPO on the held-out split with the same judge -> ``report.md`` with the table and plots.

Flags: ``--run_dir``, ``--sft_config``, ``--gspo_config`` and the evaluation flags below; shared fields
(``--model_name_or_path``, ``--dataset_name``, ``--eval_size``, ``--split_seed``, ``--judge_*``) go to both stages;
``--sft.FIELD VALUE`` and ``--gspo.FIELD VALUE`` override one stage's recipe (``--sft.max_steps 5``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medgspo.judge.arguments import JudgeArguments
from medgspo.utils.cli import Command, make_parser, parse
from medgspo.utils.paths import RECIPES

logger = logging.getLogger(__name__)

SHARED_FIELDS = {"model_name_or_path", "dataset_name", "dataset_config", "eval_size", "split_seed", "skip_invalid"}


@dataclass
class PipelineArguments:
    """Where the run goes, which recipes it uses, and how the models are evaluated."""

    run_dir: str = field(default="runs/pipeline", metadata={"help": "Folder for every output of the run."})
    sft_config: str = field(default=str(RECIPES / "tiny" / "sft.yaml"), metadata={"help": "SFT recipe."})
    gspo_config: str = field(default=str(RECIPES / "tiny" / "gspo.yaml"), metadata={"help": "GSPO recipe."})
    skip_gspo: bool = field(default=False, metadata={"help": "Stop after SFT (no judge needed)."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on at most this many held-out items."})
    eval_max_new_tokens: int = field(default=160, metadata={"help": "Token budget of each evaluation answer."})
    eval_batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch in evaluation."})
    eval_sample: bool = field(default=False, metadata={"help": "Evaluate with the card's sampling, not greedy."})
    eval_seed: int = field(default=0, metadata={"help": "Seed of evaluation sampling and bootstrap."})


@dataclass
class PipelineReport:
    """Paths a user opens after the run."""

    run_dir: Path
    adapter_dir: Path
    report_path: Path
    samples: list[dict]


# ---- argument routing (pure) ------------------------------------------------------------------------------------
def route_arguments(argv: list[str], judge_fields: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Split pipeline argv into (pipeline, SFT, GSPO) argument lists.

    >>> route_arguments(["--run_dir", "r", "--sft.max_steps", "3", "--eval_size", "0.2", "--judge_model", "m"],
    ...                 {"judge_model"})
    (['--run_dir', 'r', '--judge_model', 'm'], ['--max_steps', '3', '--eval_size', '0.2'], ['--eval_size', '0.2', '--judge_model', 'm'])
    """
    pipe, sft, gspo = [], [], []
    i = 0
    while i < len(argv):
        flag = argv[i]
        end = i + 1
        while end < len(argv) and not argv[end].startswith("--"):  # a flag may take several values (lists)
            end += 1
        chunk = argv[i:end]
        name = flag[2:].split("=", 1)[0]
        if name.startswith("sft."):
            sft += [f"--{flag[6:]}", *chunk[1:]]
        elif name.startswith("gspo."):
            gspo += [f"--{flag[7:]}", *chunk[1:]]
        elif name in SHARED_FIELDS:
            sft += chunk
            gspo += chunk
        elif name in judge_fields:
            pipe += chunk
            gspo += chunk
        else:
            pipe += chunk
        i = end
    return pipe, sft, gspo


# ---- report -----------------------------------------------------------------------------------------------------
def format_sample(gen: dict, label: str) -> str:
    """Markdown for one evaluation row: thinking and answer shown apart, and whether the format held."""
    thinking = gen["thinking"][:300] or "(empty)"
    answer = gen["answer"][:300] or "(no answer after `</think>`)"
    status = "well-formed" if gen["well_formed"] else "not well-formed"
    return f"**{label}** ({status})\n\n> 思考: {thinking}\n>\n> 回答: {answer}\n"


def findings(summaries: dict[str, dict], gspo_rows: list[dict]) -> list[str]:
    """Plain statements of what each stage did, including when it did nothing visible."""
    notes = []
    base, sft, gspo = (summaries.get(k) for k in ("base", "sft", "gspo"))
    if base and sft:
        b, s = base["format_compliance"], sft["format_compliance"]
        verb = "rose" if s > b else "did not rise"
        notes.append(f"Format compliance {verb} after SFT: {b:.0%} -> {s:.0%}.")
    rewards = [r["reward"] for r in gspo_rows if "reward" in r]
    if rewards:
        quarter = max(1, len(rewards) // 4)
        first, last = rewards[:quarter], rewards[-quarter:]
        f, la = sum(first) / len(first), sum(last) / len(last)
        trend = "rose" if la > f else "did not rise"
        notes.append(f"GSPO reward {trend}: first-quarter mean {f:.3f} -> last-quarter mean {la:.3f}.")
        clipped = [r["clip_ratio/region_mean"] for r in gspo_rows if "clip_ratio/region_mean" in r] or [0.0]
        notes.append(
            f"Sequences clipped by GSPO: max {max(clipped):.0%} of a minibatch, mean {sum(clipped) / len(clipped):.1%}."
        )
    if sft and gspo:
        notes.append(
            f"Format compliance after GSPO: {sft['format_compliance']:.0%} -> {gspo['format_compliance']:.0%}."
        )
    if sft and gspo and gspo.get("mean_score") is not None and sft.get("mean_score") is not None:
        d = gspo["mean_score"] - sft["mean_score"]
        notes.append(f"Mean judge score GSPO vs SFT: {d:+.3f} (see the 95% intervals before reading much into it).")
    notes += collapse_warning(sft, gspo)
    return notes


def collapse_warning(sft: dict | None, gspo: dict | None) -> list[str]:
    """A plain warning when GSPO's answers lost most of their variety (a policy gaming its judge).

    >>> collapse_warning({"distinct_answers": 0.9}, {"distinct_answers": 0.1})[0][:46]
    'GSPO answers collapsed: 10% distinct vs 90% af'
    >>> collapse_warning({"distinct_answers": 0.9}, {"distinct_answers": 0.8})
    []
    """
    before, after = (sft or {}).get("distinct_answers"), (gspo or {}).get("distinct_answers")
    if before is None or after is None or after >= 0.5 * before:
        return []
    return [
        f"GSPO answers collapsed: {after:.0%} distinct vs {before:.0%} after SFT. The policy found a few answers its "
        "judge scores better than its usual ones (or abstains on: an abstention counts as its group's mean) and "
        "gives them to every question: reward hacking, not medical skill. Read the reward curve with this in mind."
    ]


def write_report(path: Path, ctx: dict) -> None:
    """``report.md``: stage summaries, the evaluation table, the plots and samples."""
    sft, gspo = ctx["sft"], ctx.get("gspo")
    lines = ["# medgspo pipeline report", "", f"Run folder: `{ctx['run_dir']}`; wall time {ctx['wall_s']:.0f} s.", ""]
    lines += ["## What happened", ""] + [f"- {n}" for n in ctx["findings"]] + [""]
    if ctx.get("tiny"):
        lines += [
            "The embedded model is a ~1.6M-parameter random-init Qwen3.5 trained for minutes on a CPU: it shows "
            "the mechanics of each stage, not medical competence.",
            "",
        ]
    lines += [
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
    if gspo:
        js = gspo["judge_stats"]
        lines += [
            "## GSPO",
            "",
            "| | value |",
            "|---|---|",
            f"| optimizer steps | {gspo['global_step']} |",
            f"| config | {', '.join(f'{k}={v}' for k, v in gspo['config'].items())} |",
            f"| reward weights | {gspo['reward_weights']} |",
            f"| judge | {gspo['judge']['backend']} `{gspo['judge']['model']}` |",
            f"| judge calls / cache hits / failures | {js['calls']} / {js['cache_hits']} / {js['failures']} |",
            f"| judge tokens in / out, cost | {js['prompt_tokens']} / {js['completion_tokens']}, ${js['cost_usd']} |",
            "",
        ]
        lines += [f"> {note}" for note in gspo["clipping_notes"]] + [""]
        lines += [f"![{Path(p).stem}]({Path(p).relative_to(ctx['run_dir'])})" for p in gspo["plots"]] + [""]
    if ctx.get("eval_md"):
        lines += ["## Evaluation on the held-out split", "", ctx["eval_md"], "", "![eval](eval/eval.png)", ""]
    if ctx.get("samples"):
        lines += ["## A held-out question", ""]
        s = ctx["samples"][0]
        lines += [f"**Q:** {s['question']}", "", f"**Reference:** {s['reference']}", ""]
        lines += [format_sample(s[name], name) for name in ("base", "sft", "gspo") if name in s]
    path.write_text("\n".join(lines), encoding="utf-8")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ---- the job ----------------------------------------------------------------------------------------------------
def run_pipeline(argv: list[str] | None = None) -> PipelineReport:
    """Route the flags, run every stage, evaluate, write ``report.md``."""
    from medgspo.data.arguments import EVAL_SPLIT_FILE
    from medgspo.eval.metrics import markdown_table
    from medgspo.eval.open_ended import run_eval
    from medgspo.train.gspo import GSPO_ARGUMENTS, run_gspo
    from medgspo.train.plots import read_metrics
    from medgspo.train.sft import SFT_ARGUMENTS, run_sft

    start = time.perf_counter()
    judge_fields = set(JudgeArguments.__dataclass_fields__)
    pipe_argv, sft_argv, gspo_argv = route_arguments(list(argv or []), judge_fields)
    pipe_args, judge_args = parse(make_parser(PIPELINE_ARGUMENTS, "medgspo pipeline"), pipe_argv)
    judge_args.check()
    run_dir = Path(pipe_args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # ---- stage 1: SFT -----------------------------------------------------------------------------------------
    sft_argv = ["--config", pipe_args.sft_config, *sft_argv, "--output_dir", str(run_dir / "sft")]
    sft_cfg = parse(make_parser(SFT_ARGUMENTS, "medgspo pipeline (SFT)"), sft_argv)
    sft = run_sft(*sft_cfg)

    # ---- stage 2: GSPO ----------------------------------------------------------------------------------------
    gspo = None
    if not pipe_args.skip_gspo:
        gspo_argv = [
            "--config",
            pipe_args.gspo_config,
            *gspo_argv,
            "--output_dir",
            str(run_dir / "gspo"),
            "--sft_adapter",
            str(sft.output_dir),
        ]
        gspo_cfg = parse(make_parser(GSPO_ARGUMENTS, "medgspo pipeline (GSPO)"), gspo_argv)
        gspo = run_gspo(*gspo_cfg)

    # ---- evaluation: base, SFT, GSPO on the held-out split, same judge ------------------------------------------
    held = [json.loads(x) for x in (sft.output_dir / EVAL_SPLIT_FILE).read_text(encoding="utf-8").splitlines()]
    held = held[: pipe_args.eval_limit] if pipe_args.eval_limit else held
    base = sft.summary["model_path"]
    models = [("base", base, None), ("sft", base, str(sft.output_dir))]
    models += [("gspo", base, str(gspo.output_dir))] if gspo else []
    summaries = run_eval(
        models,
        held,
        judge_args.to_config(run_dir / "judge_cache.sqlite"),
        run_dir / "eval",
        batch_size=pipe_args.eval_batch_size,
        max_new_tokens=pipe_args.eval_max_new_tokens,
        do_sample=pipe_args.eval_sample,
        seed=pipe_args.eval_seed,
    )
    samples = _samples(run_dir / "eval" / "generations.jsonl")

    # ---- report -------------------------------------------------------------------------------------------------
    gspo_rows = read_metrics(gspo.output_dir / "metrics.jsonl") if gspo else []
    ctx = {
        "run_dir": run_dir,
        "wall_s": time.perf_counter() - start,
        "sft": sft.summary,
        "gspo": gspo.summary if gspo else None,
        "eval_md": markdown_table(summaries),
        "findings": findings(summaries, gspo_rows),
        "samples": samples,
        "tiny": sft.summary["base_model"] in (None, "tiny"),
    }
    report_path = run_dir / "report.md"
    write_report(report_path, ctx)
    (run_dir / "pipeline_args.json").write_text(json.dumps(asdict(pipe_args), indent=2), encoding="utf-8")
    adapter = gspo.output_dir if gspo else sft.output_dir
    return PipelineReport(run_dir, adapter, report_path, samples)


def _samples(generations: Path) -> list[dict]:
    """Per question: reference and each model's split completion (from the evaluation's generations)."""
    by_question: dict[str, dict] = {}
    for line in generations.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        entry = by_question.setdefault(row["question"], {"question": row["question"], "reference": row["reference"]})
        entry[row["model"]] = {k: row[k] for k in ("completion", "thinking", "answer", "well_formed")}
    return list(by_question.values())


# ---- the command ------------------------------------------------------------------------------------------------
PIPELINE_ARGUMENTS = (PipelineArguments, JudgeArguments)


def run_command(argv: list[str]) -> int:
    """``medgspo pipeline``: run the job, print a sample of each model and the report's path."""
    report = run_pipeline(argv)
    if report.samples:
        sample = report.samples[0]
        print(f"\nQuestion:  {sample['question']}\nReference: {sample['reference']}")
        for name, title in (("base", "before SFT (base model)"), ("sft", "after SFT"), ("gspo", "after GSPO")):
            if name in sample:
                print(f"\n--- {title} ---\n{sample[name]['completion'][:400]}")
    print(f"\nDone. Adapter: {report.adapter_dir}")
    print(f"Report:        {report.report_path}")
    return 0


COMMANDS = [
    Command(
        "pipeline",
        PIPELINE_ARGUMENTS,
        run_command,
        "The main job: tiny model -> SFT -> GSPO -> evaluation -> report.md. `--sft.FIELD v` / `--gspo.FIELD v` "
        "override one stage's recipe; --model_name_or_path, --dataset_name, --eval_size, --split_seed go to both.",
        own_parsing=True,
    )
]
