"""The job itself: parse every stage's flags once, run the stages, evaluate base/SFT/GSPO on held-out and seen
questions.

Stages: build the tiny model (first use) -> pretrain it on plain text (the embedded tiny model only, see
:mod:`medgspo.train.pretrain`) -> SFT (LoRA) -> GSPO from the SFT adapter with the judge reward -> evaluate base,
SFT and GSPO with the same judge on the held-out split *and* on a fixed sample of the questions GSPO trained on
("seen") -> ``report.md`` and ``summary.json`` (:mod:`medgspo.pipeline.report`).

Flags: ``--run_dir``, ``--pretrain``, ``--pretrain_config``, ``--sft_config``, ``--gspo_config`` and the evaluation
flags of :class:`PipelineArguments`; shared fields (``--model_name_or_path``, ``--dataset_name``, ``--eval_size``,
``--split_seed``, ``--seed``) go to every stage that takes them; ``--pretrain.FIELD VALUE``, ``--sft.FIELD VALUE``
and ``--gspo.FIELD VALUE`` override one stage's recipe (``--sft.max_steps 5``). The ``--judge_*`` flags, with the GSPO
recipe's ``judge_*`` keys, make the one :class:`~medgspo.judge.config.JudgeConfig` that GSPO and evaluation share
(one cache file in the run folder: an answer judged in training is not paid again in evaluation).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medgspo.errors import ConfigError
from medgspo.judge.api.preflight import preflight
from medgspo.judge.config import JudgeConfig
from medgspo.modeling.tiny_model import TINY_MODEL
from medgspo.pipeline.report import SPLITS, ReportInputs, machine_info, pick_samples, summary_document, write_report
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
    ``gspo``); the judge's flags go to GSPO's parser, the one that makes the run's judge config.

    >>> routed = route_arguments(["--run_dir", "r", "--sft.max_steps", "3", "--eval_size", "0.2", "--judge_model", "m"],
    ...                          {"judge_model"})
    >>> routed["pipeline"], routed["sft"], routed["gspo"]
    (['--run_dir', 'r'], ['--max_steps', '3', '--eval_size', '0.2'], ['--eval_size', '0.2', '--judge_model', 'm'])
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
        elif name in judge_fields:  # parsed once, with the GSPO recipe's judge keys
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


# ---- the configs ------------------------------------------------------------------------------------------------
@dataclass
class PipelineConfigs:
    """Every stage's parsed flags, built once from the pipeline's argv and recipes."""

    pipeline: PipelineArguments
    sft: Any  # SFTConfigs
    gspo: Any  # GSPOConfigs (its ``judge`` is the run's one judge config)
    pretrain: Any = None  # PretrainConfigs, when the run pretrains

    @property
    def judge(self) -> JudgeConfig:
        return self.gspo.judge


def parse_pipeline(argv: list[str]) -> PipelineConfigs:
    """Parse the pipeline's flags and each stage's recipe + flags, once; the stages' outputs go into the run
    folder, GSPO continues the SFT adapter, and a pretrained model becomes the base of SFT and GSPO."""
    from medgspo.train.gspo import GSPO_ARGUMENTS, GSPOConfigs, default_judge_cache
    from medgspo.train.pretrain import PRETRAIN_ARGUMENTS, PretrainConfigs
    from medgspo.train.sft import SFT_ARGUMENTS, SFTConfigs

    routed = route_arguments(list(argv), set(JudgeConfig.__dataclass_fields__))
    (pipe,) = parse(make_parser((PipelineArguments,), "medgspo pipeline"), routed["pipeline"])
    run_dir = Path(pipe.run_dir)

    def stage(types, configs, name, recipe, *extra):
        argv = ["--config", recipe, *routed[name], "--output_dir", str(run_dir / name), *extra]
        return configs(*parse(make_parser(types, f"medgspo pipeline ({name})"), argv))

    sft = stage(SFT_ARGUMENTS, SFTConfigs, "sft", pipe.sft_config)
    gspo = stage(GSPO_ARGUMENTS, GSPOConfigs, "gspo", pipe.gspo_config, "--sft_adapter", str(run_dir / "sft"))
    default_judge_cache(gspo.judge, run_dir)  # one cache for GSPO and evaluation
    pretrain = None
    if wants_pretraining(pipe.pretrain, sft.model.model_name_or_path):
        pretrain = stage(PRETRAIN_ARGUMENTS, PretrainConfigs, "pretrain", pipe.pretrain_config)
        for later in (sft, gspo):  # SFT, GSPO and evaluation start from the pretrained model
            later.model.model_name_or_path = str(run_dir / "pretrain")
    return PipelineConfigs(pipe, sft, gspo, pretrain)


# ---- the job ----------------------------------------------------------------------------------------------------
def run_pipeline(argv: list[str] | None = None) -> PipelineReport:
    """Parse the flags, run every stage, evaluate, write ``report.md`` and ``summary.json``."""
    from medgspo.train.gspo import run_gspo
    from medgspo.train.pretrain import run_pretrain
    from medgspo.train.sft import run_sft

    start = time.perf_counter()
    configs = parse_pipeline(list(argv or []))
    pipe, judge_config = configs.pipeline, configs.judge
    if not pipe.skip_gspo:  # a bad judge key, model name or balance stops here, before any stage
        preflight(judge_config)
    Path(pipe.run_dir).mkdir(parents=True, exist_ok=True)

    pretrained = run_pretrain(*configs.pretrain) if configs.pretrain else None
    sft = run_sft(*configs.sft)
    gspo = run_gspo(*configs.gspo, judge_checked=True) if not pipe.skip_gspo else None
    evaluation = evaluate_stages(pipe, judge_config, sft, gspo)

    return write_outputs(
        ReportInputs(
            run_dir=Path(pipe.run_dir),
            wall_s=time.perf_counter() - start,
            machine=machine_info(),
            seeds=stage_seeds(configs),
            sft=sft.summary,
            summaries={split: e.summaries for split, e in evaluation.items()},
            generations={split: e.rows for split, e in evaluation.items()},
            samples={split: pick_samples(e.rows) for split, e in evaluation.items()},
            eval_max_new_tokens=pipe.eval_max_new_tokens,
            eval_sample=pipe.eval_sample,
            tiny=pretrained is not None or sft.summary["base_model"] in (None, TINY_MODEL),
            pretrain=pretrained.summary if pretrained else None,
            gspo=gspo.summary if gspo else None,
            gspo_rows=gspo.metrics if gspo else [],
        ),
        pipe,
        adapter=gspo.adapter if gspo else sft.adapter,
    )


def evaluate_stages(pipe: PipelineArguments, judge_config: JudgeConfig, sft: Any, gspo: Any) -> dict[str, Any]:
    """Base, SFT and GSPO with the same judge on the held-out split and on a fixed sample of the questions the last
    stage trained on ("seen"); one :class:`~medgspo.eval.runner.Evaluation` per split that has questions."""
    from medgspo.eval.open_ended import evaluate_open

    held = sft.held_out[: pipe.eval_limit] if pipe.eval_limit else sft.held_out
    records = {"heldout": held, "seen": even_sample((gspo or sft).trained, pipe.eval_seen)}
    base = sft.summary["model_path"]
    models = [("base", base, None), ("sft", base, str(sft.adapter))]
    models += [("gspo", base, str(gspo.adapter))] if gspo else []
    announce(
        f"Evaluation: {', '.join(m[0] for m in models)} on {len(records['heldout'])} held-out and "
        f"{len(records['seen'])} seen questions ({'sampled' if pipe.eval_sample else 'greedy'}, "
        f"{pipe.eval_max_new_tokens} new tokens, judge {judge_config.judge_backend})"
    )
    settings = {
        "batch_size": pipe.eval_batch_size,
        "max_new_tokens": pipe.eval_max_new_tokens,
        "do_sample": pipe.eval_sample,
        "seed": pipe.eval_seed,
        "show_progress": False,  # one line per model instead (a bar per model and per split fills the screen)
    }
    out = Path(pipe.run_dir) / "eval"
    return {
        split: evaluate_open(models, records[split], judge_config, out / split, **settings)
        for split in SPLITS
        if records[split]
    }


def stage_seeds(configs: PipelineConfigs) -> dict[str, int]:
    """The seed of every stage (and of the split), for the report."""
    seeds = {"split": configs.sft.data.split_seed}
    if configs.pretrain:
        seeds["pretrain"] = configs.pretrain.training.seed
    seeds["sft"] = configs.sft.training.seed
    if not configs.pipeline.skip_gspo:
        seeds["gspo"] = configs.gspo.training.seed
    return {**seeds, "eval": configs.pipeline.eval_seed}


def write_outputs(inputs: ReportInputs, pipe: PipelineArguments, adapter: Path) -> PipelineReport:
    """``report.md``, ``summary.json`` and ``pipeline_args.json`` in the run folder."""
    summary = summary_document(inputs.wall_s, inputs.summaries, inputs.generations)
    report_path = write_report(inputs.run_dir / "report.md", inputs)
    summary_path = write_json(inputs.run_dir / SUMMARY_FILE, summary)
    write_json(inputs.run_dir / "pipeline_args.json", asdict(pipe))
    return PipelineReport(inputs.run_dir, adapter, report_path, summary_path, summary, inputs.samples)


PIPELINE_ARGUMENTS = (PipelineArguments, JudgeConfig)  # what `medgspo pipeline --help` lists
