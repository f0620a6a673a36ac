"""The job itself: route the flags, run the stages, evaluate base/SFT/GSPO on held-out and seen questions.

Stages: build the tiny model (first use) -> pretrain it on plain text (the embedded tiny model only, see
:mod:`medgspo.train.pretrain`) -> SFT (LoRA) -> GSPO from the SFT adapter with the judge reward -> evaluate base,
SFT and GSPO with the same judge on the held-out split *and* on a fixed sample of the questions GSPO trained on
("seen") -> ``report.md`` and ``summary.json`` (:mod:`medgspo.pipeline.report`).

Flags: ``--run_dir``, ``--pretrain``, ``--pretrain_config``, ``--sft_config``, ``--gspo_config`` and the evaluation
flags of :class:`PipelineArguments`; shared fields (``--model_name_or_path``, ``--dataset_name``, ``--eval_size``,
``--split_seed``, ``--seed``, ``--judge_*``) go to every stage that takes them; ``--pretrain.FIELD VALUE``, ``--sft.FIELD VALUE``
and ``--gspo.FIELD VALUE`` override one stage's recipe (``--sft.max_steps 5``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medgspo.data.tiny_model import TINY_MODEL
from medgspo.errors import ConfigError
from medgspo.judge.arguments import JudgeArguments
from medgspo.judge.preflight import preflight
from medgspo.pipeline.report import SPLITS, machine_info, pick_samples, summary_document, write_report
from medgspo.utils.cli import make_parser, parse
from medgspo.utils.console import announce
from medgspo.utils.io import write_json
from medgspo.utils.paths import RECIPES

logger = logging.getLogger(__name__)

SHARED_FIELDS = {
    "model_name_or_path",
    "dataset_name",
    "dataset_config",
    "eval_size",
    "split_seed",
    "skip_invalid",
    "seed",  # the training seed of every stage (pretraining, SFT, GSPO); evaluation keeps --eval_seed
}
SUMMARY_FILE = "summary.json"
STAGE_PREFIXES = ("pretrain", "sft", "gspo")
PRETRAIN_MODES = ("auto", "yes", "no")


@dataclass
class PipelineArguments:
    """Where the run goes, which recipes it uses, and how the models are evaluated."""

    run_dir: str = field(default="runs/pipeline", metadata={"help": "Folder for every output of the run."})
    pretrain: str = field(
        default="auto",
        metadata={
            "help": "Plain-text pretraining before SFT: auto (only for the embedded random-init tiny model), yes, no."
        },
    )
    pretrain_config: str = field(
        default=str(RECIPES / "tiny" / "pretrain.yaml"), metadata={"help": "Pretraining recipe."}
    )
    sft_config: str = field(default=str(RECIPES / "tiny" / "sft.yaml"), metadata={"help": "SFT recipe."})
    gspo_config: str = field(default=str(RECIPES / "tiny" / "gspo.yaml"), metadata={"help": "GSPO recipe."})
    skip_gspo: bool = field(default=False, metadata={"help": "Stop after SFT (no judge needed)."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on at most this many held-out items."})
    eval_seen: int = field(
        default=48,
        metadata={
            "help": "How many questions GSPO trained on to evaluate as well ('seen'): a fixed sample, evenly "
            "spaced over its training prompts (SFT's when --skip_gspo). 0: held-out only."
        },
    )
    eval_max_new_tokens: int = field(default=160, metadata={"help": "Token budget of each evaluation answer."})
    eval_batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch in evaluation."})
    eval_sample: bool = field(default=False, metadata={"help": "Evaluate with the card's sampling, not greedy."})
    eval_seed: int = field(default=0, metadata={"help": "Seed of evaluation sampling and bootstrap."})


@dataclass
class PipelineReport:
    """What a user opens after the run, and the samples the console shows."""

    run_dir: Path
    adapter_dir: Path
    report_path: Path
    summary_path: Path
    summary: dict[str, Any]
    samples: dict[str, dict]


# ---- argument routing (pure) ------------------------------------------------------------------------------------
def route_arguments(argv: list[str], judge_fields: set[str]) -> dict[str, list[str]]:
    """Split pipeline argv into the pipeline's own flags and each stage's (``pipeline``, ``pretrain``, ``sft``,
    ``gspo``).

    >>> routed = route_arguments(["--run_dir", "r", "--sft.max_steps", "3", "--eval_size", "0.2", "--judge_model", "m"],
    ...                          {"judge_model"})
    >>> routed["pipeline"], routed["sft"], routed["gspo"]
    (['--run_dir', 'r', '--judge_model', 'm'], ['--max_steps', '3', '--eval_size', '0.2'], ['--eval_size', '0.2', '--judge_model', 'm'])
    >>> route_arguments(["--judge-model", "m", "--no_judge_preflight"], {"judge_model", "judge_preflight"})["gspo"]
    ['--judge-model', 'm', '--no_judge_preflight']
    """
    routed: dict[str, list[str]] = {"pipeline": [], **{stage: [] for stage in STAGE_PREFIXES}}
    i = 0
    while i < len(argv):
        flag = argv[i]
        end = i + 1
        while end < len(argv) and not argv[end].startswith("--"):  # a flag may take several values (lists)
            end += 1
        chunk = argv[i:end]
        name = flag[2:].split("=", 1)[0].replace("-", "_")  # `--judge-model` is `--judge_model`
        if name.startswith("no_") and name[3:] in judge_fields | SHARED_FIELDS:  # `--no_judge_preflight`
            name = name[3:]
        stage = name.split(".", 1)[0] if "." in name else None
        if stage in STAGE_PREFIXES:
            routed[stage] += [f"--{flag[len(stage) + 3 :]}", *chunk[1:]]
        elif name in SHARED_FIELDS:
            for stage in STAGE_PREFIXES:
                routed[stage] += chunk
        elif name in judge_fields:
            routed["pipeline"] += chunk
            routed["gspo"] += chunk
        else:
            routed["pipeline"] += chunk
        i = end
    return routed


def wants_pretraining(mode: str, model_name_or_path: str | None) -> bool:
    """Whether the pipeline pretrains before SFT: ``auto`` does for the embedded tiny model only.

    >>> wants_pretraining("auto", "tiny"), wants_pretraining("auto", "Qwen/Qwen3.5-4B"), wants_pretraining("yes", "m")
    (True, False, True)
    """
    if mode not in PRETRAIN_MODES:
        raise ConfigError(f"--pretrain must be one of {', '.join(PRETRAIN_MODES)}, got {mode!r}")
    return mode == "yes" or (mode == "auto" and model_name_or_path in (None, "", TINY_MODEL))


def even_sample(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when ``n >= len(items)``), in order.

    >>> even_sample(list(range(10)), 4), even_sample([1, 2], 5)
    ([0, 2, 5, 7], [1, 2])
    """
    if n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(max(n, 0))]


def seen_questions(data_args: Any, limit: int | None, n: int) -> list[dict]:
    """A fixed sample of the records a stage trained on: the same split and prefix the stage used."""
    from medgspo.data.arguments import load_split

    _, train, _ = load_split(data_args)
    trained = train[:limit] if limit else train
    return even_sample(trained, n)


# ---- the job ----------------------------------------------------------------------------------------------------
def run_pipeline(argv: list[str] | None = None) -> PipelineReport:
    """Route the flags, run every stage, evaluate, write ``report.md`` and ``summary.json``."""
    from medgspo.data.arguments import EVAL_SPLIT_FILE
    from medgspo.eval.open_ended import run_eval
    from medgspo.train.gspo import GSPO_ARGUMENTS, run_gspo
    from medgspo.train.plots import read_metrics
    from medgspo.train.pretrain import PRETRAIN_ARGUMENTS, run_pretrain
    from medgspo.train.sft import SFT_ARGUMENTS, run_sft

    start = time.perf_counter()
    judge_fields = set(JudgeArguments.__dataclass_fields__)
    routed = route_arguments(list(argv or []), judge_fields)
    pipe_args, judge_args = parse(make_parser(PIPELINE_ARGUMENTS, "medgspo pipeline"), routed["pipeline"])
    judge_args.check()
    if not pipe_args.skip_gspo:  # a bad judge key, model name or balance stops here, before SFT
        preflight(judge_args)
    run_dir = Path(pipe_args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sft_argv = ["--config", pipe_args.sft_config, *routed["sft"], "--output_dir", str(run_dir / "sft")]
    sft_cfg = parse(make_parser(SFT_ARGUMENTS, "medgspo pipeline (SFT)"), sft_argv)
    gspo_argv = routed["gspo"]
    seeds = {"split": sft_cfg[0].split_seed}

    # ---- stage 0: pretraining (the embedded tiny model only) --------------------------------------------------
    pretrained = None
    if wants_pretraining(pipe_args.pretrain, sft_cfg[3].model_name_or_path):
        pre_argv = [
            "--config",
            pipe_args.pretrain_config,
            *routed["pretrain"],
            "--output_dir",
            str(run_dir / "pretrain"),
        ]
        pre_cfg = parse(make_parser(PRETRAIN_ARGUMENTS, "medgspo pipeline (pretraining)"), pre_argv)
        pretrained = run_pretrain(*pre_cfg)
        seeds["pretrain"] = pre_cfg[2].seed
        sft_cfg[3].model_name_or_path = str(pretrained.output_dir)  # SFT, GSPO and evaluation start from it
        gspo_argv = [*gspo_argv, "--model_name_or_path", str(pretrained.output_dir)]

    # ---- stage 1: SFT -----------------------------------------------------------------------------------------
    sft = run_sft(*sft_cfg)
    seeds["sft"] = sft_cfg[2].seed
    trained_on = (sft_cfg[0], sft_cfg[0].max_train_samples)

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
        seeds["gspo"] = gspo_cfg[4].seed
        trained_on = (gspo_cfg[0], gspo_cfg[4].max_prompts)
    seeds["eval"] = pipe_args.eval_seed

    # ---- evaluation: base, SFT, GSPO on held-out and seen questions, same judge -----------------------------------
    held = [json.loads(x) for x in (sft.output_dir / EVAL_SPLIT_FILE).read_text(encoding="utf-8").splitlines()]
    held = held[: pipe_args.eval_limit] if pipe_args.eval_limit else held
    records = {"heldout": held, "seen": seen_questions(*trained_on, pipe_args.eval_seen)}
    base = sft.summary["model_path"]
    models = [("base", base, None), ("sft", base, str(sft.output_dir))]
    models += [("gspo", base, str(gspo.output_dir))] if gspo else []
    judge_config = judge_args.to_config(run_dir / "judge_cache.sqlite")
    summaries, rows = {}, {}
    announce(
        f"Evaluation: {', '.join(m[0] for m in models)} on {len(records['heldout'])} held-out and "
        f"{len(records['seen'])} seen questions ({'sampled' if pipe_args.eval_sample else 'greedy'}, "
        f"{pipe_args.eval_max_new_tokens} new tokens, judge {judge_config.backend})"
    )
    for split in SPLITS:
        if not records[split]:
            continue
        out = run_dir / "eval" / split
        summaries[split] = run_eval(
            models,
            records[split],
            judge_config,
            out,
            batch_size=pipe_args.eval_batch_size,
            max_new_tokens=pipe_args.eval_max_new_tokens,
            do_sample=pipe_args.eval_sample,
            seed=pipe_args.eval_seed,
            show_progress=False,  # one line per model instead (a bar per model and per split fills the screen)
        )
        rows[split] = [
            json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()
        ]

    # ---- report -------------------------------------------------------------------------------------------------
    samples = {split: pick_samples(split_rows) for split, split_rows in rows.items()}
    wall_s = time.perf_counter() - start
    summary = summary_document(wall_s, summaries, rows)
    ctx = {
        "run_dir": run_dir,
        "wall_s": wall_s,
        "machine": machine_info(),
        "seeds": seeds,
        "pretrain": pretrained.summary if pretrained else None,
        "sft": sft.summary,
        "gspo": gspo.summary if gspo else None,
        "gspo_rows": read_metrics(gspo.output_dir / "metrics.jsonl") if gspo else [],
        "summaries": summaries,
        "samples": samples,
        "generations": rows,
        "tiny": pretrained is not None or sft.summary["base_model"] in (None, TINY_MODEL),
        "eval": {"max_new_tokens": pipe_args.eval_max_new_tokens, "sample": pipe_args.eval_sample},
    }
    report_path = run_dir / "report.md"
    write_report(report_path, ctx)
    summary_path = write_json(run_dir / SUMMARY_FILE, summary)
    write_json(run_dir / "pipeline_args.json", asdict(pipe_args))
    adapter = gspo.output_dir if gspo else sft.output_dir
    return PipelineReport(run_dir, adapter, report_path, summary_path, summary, samples)


PIPELINE_ARGUMENTS = (PipelineArguments, JudgeArguments)
