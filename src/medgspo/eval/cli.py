"""``medgspo eval``: evaluate one or more models on open-ended questions (5-tier judge) or multiple choice.

    medgspo eval                                              # tiny model, bundled held-out questions, offline judge
    medgspo eval --model tiny --adapter none --adapter runs/tiny/sft --limit 16
    medgspo eval --model Qwen/Qwen3.5-4B --adapter none runs/sft runs/gspo \\
        --judge_backend openai --judge_cache runs/judge_cache.sqlite
    medgspo eval --task mcq --data MedQA/data_clean/questions/Mainland/test.jsonl --data CMExam/test.csv \\
        --data CMMLU/data/test --subjects medical --model Qwen/Qwen3.5-4B --adapter none runs/gspo
    medgspo eval --config my_eval.yaml --limit 8              # any flag from a YAML file; flags override it

Models: each ``--model`` is paired with the ``--adapter`` in the same position (``none`` = no adapter); a single
``--model`` with several adapters evaluates every adapter on that base. ``--name`` labels the table rows (default:
the adapter folder's name, else the model's). List flags take several values (``--adapter none runs/sft``) or
repeat (``--adapter none --adapter runs/sft``). Open-ended data defaults to the ``eval_split.jsonl`` saved beside
the first adapter, else the bundled records' held-out split (the one ``medgspo sft`` holds out by default);
multiple choice takes one or more benchmark files or CMMLU folders (layouts detected per path, see
:mod:`medgspo.eval.layouts`) and defaults to the bundled ``data/mcq_zh.jsonl``. The judge flags are
:class:`~medgspo.judge.config.JudgeConfig`.

Outputs in ``--output_dir``: ``generations.jsonl``, ``eval.json``, ``eval.md``, ``eval.png`` (open) or
``mcq_generations.jsonl``, ``mcq.json``, ``mcq.md``, ``mcq_table.json`` (mcq). Exit codes: 0 done, 2 bad input or
flags, 3 fatal judge error (bad key, no balance), 130 interrupted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from medgspo.data.arguments import EVAL_SPLIT_FILE, DataArguments, load_split
from medgspo.data.records import load_records
from medgspo.errors import ConfigError
from medgspo.eval.benchmarks import load_benchmarks
from medgspo.eval.layouts import LAYOUT_CHOICES
from medgspo.eval.layouts.cmmlu import MEDICAL_SUBJECTS
from medgspo.eval.mcq import PROMPT_STYLES, MCQTask
from medgspo.eval.open_ended import OpenTask
from medgspo.eval.runner import GenerationSettings, ModelSpec, Task, evaluate
from medgspo.judge.api.preflight import preflight
from medgspo.judge.config import JudgeConfig
from medgspo.modeling.generation import CARD_SAMPLING
from medgspo.modeling.loading import check_model_arguments
from medgspo.utils.cli import Command
from medgspo.utils.paths import looks_like_path

logger = logging.getLogger(__name__)

NO_ADAPTER = ("none", "-", "")
LIST_FLAGS = ("model", "adapter", "name", "data", "subjects")
CARD = ", ".join(f"{k} {v}" for k, v in CARD_SAMPLING.items())
DESCRIPTION = (
    "Evaluate models side by side: judge-scored open questions (--task open) or multiple-choice accuracy "
    "(--task mcq). List flags take several values or repeat: --adapter none runs/sft. See docs/evaluation.md."
)


@dataclass
class EvalArguments:
    """Which models answer which questions, and how they generate."""

    model: list[str] | None = field(
        default=None, metadata={"help": "Base model(s): a folder, a Hub id or `tiny` (default tiny)."}
    )
    adapter: list[str] | None = field(
        default=None,
        metadata={
            "help": "LoRA adapter folder for the --model in the same position, or `none`; with a single "
            "--model every adapter is evaluated on it."
        },
    )
    name: list[str] | None = field(
        default=None, metadata={"help": "Table label per model (default: the adapter's or the model's name)."}
    )
    task: str = field(
        default="open",
        metadata={"help": "`open`: judged free answers; `mcq`: multiple-choice accuracy.", "choices": ("open", "mcq")},
    )
    data: list[str] | None = field(
        default=None,
        metadata={
            "help": "open: one file or folder of medical-o1 records (.jsonl/.json/.parquet). mcq: one or more "
            "benchmarks, each a file (ours .jsonl, MedQA-MCMLE .jsonl, CMExam .csv, CMB-Exam .json, CMMLU .csv) "
            "or a folder of CMMLU subject .csv files; one table row per benchmark. Default: bundled data."
        },
    )
    mcq_layout: str = field(
        default="auto",
        metadata={
            "help": "Layout of every --data for --task mcq (auto: detected per path).",
            "choices": LAYOUT_CHOICES,
        },
    )
    subjects: list[str] | None = field(
        default=None,
        metadata={
            "help": "CMMLU subject files to read from a CMMLU folder; `medical` = "
            f"{', '.join(MEDICAL_SUBJECTS)}. Default: every file."
        },
    )
    mcq_prompt: str = field(
        default="medgspo",
        metadata={
            "help": "MCQ prompt: `medgspo` (Chinese, think then `答案：X`) or `huatuo` (HuatuoGPT-o1's eval prompt).",
            "choices": PROMPT_STYLES,
        },
    )
    num_samples: int = field(
        default=1,
        metadata={"help": "mcq: answers per question (needs --sample); reports mean accuracy and its spread."},
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "Only the first N questions (mcq: of each --data; of each subject file in a CMMLU folder)."},
    )
    output_dir: str = field(default="runs/eval", metadata={"help": "Where the results go."})
    batch_size: int = field(default=16, metadata={"help": "Prompts generated together."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token budget per answer."})
    sample: bool = field(
        default=False, metadata={"help": f"Sample with the model card's settings ({CARD}) instead of greedy decoding."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling and bootstrap seed."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (--no_progress hides them)."})

    def check(self) -> None:
        """Values that are wrong before anything runs; each message names the flag."""
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1 (got {self.limit})")
        if self.num_samples < 1:
            raise ConfigError(f"--num_samples must be >= 1 (got {self.num_samples})")
        if self.num_samples > 1 and not self.sample:
            raise ConfigError("--num_samples > 1 needs --sample (greedy decoding gives the same answer every time)")
        if self.task == "open":
            if self.data and len(self.data) > 1:
                raise ConfigError(f"--task open reads one --data (got {len(self.data)}); several are for --task mcq")
            for name, value in (("--num_samples", self.num_samples > 1), ("--subjects", self.subjects)):
                if value:
                    raise ConfigError(f"{name} applies to --task mcq only")
        self.generation().check()

    def generation(self) -> GenerationSettings:
        """The :class:`~medgspo.eval.runner.GenerationSettings` these flags describe."""
        return GenerationSettings(
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.sample,
            seed=self.seed,
            show_progress=self.progress,
        )


# ---- pure flag handling -------------------------------------------------------------------------------------------


def default_name(model: str, adapter: str | None) -> str:
    """A row label: the adapter folder's name, else the model's folder name, else the model id.

    >>> default_name("tiny", "runs/tiny/sft/"), default_name("/models/qwen-base", None), default_name("Qwen/X", None)
    ('sft', 'qwen-base', 'Qwen/X')
    """
    if adapter:
        return Path(adapter).name or adapter
    if looks_like_path(model):
        return Path(model).name or model
    return model


def resolve_models(models: list[str] | None, adapters: list[str] | None, names: list[str] | None) -> list[ModelSpec]:
    """Pair ``--model``/``--adapter``/``--name`` into ``(name, model, adapter)``; :class:`ConfigError` names the flag.

    >>> resolve_models(None, ["none", "runs/sft"], None)
    [('tiny', 'tiny', None), ('sft', 'tiny', 'runs/sft')]
    """
    models = models or ["tiny"]
    adapters = [None if a.strip().lower() in NO_ADAPTER else a for a in adapters] if adapters else None
    if adapters is None:
        adapters = [None] * len(models)
    elif len(models) == 1:
        models = models * len(adapters)
    elif len(adapters) != len(models):
        raise ConfigError(
            f"--adapter is given {len(adapters)} times but --model {len(models)} times; give one "
            "--adapter per --model (`none` for no adapter) or a single --model"
        )
    if names is not None and len(names) != len(models):
        raise ConfigError(f"--name is given {len(names)} times for {len(models)} model(s); give one per model")
    labels = names or _unique([default_name(m, a) for m, a in zip(models, adapters, strict=True)])
    if len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
        raise ConfigError(f"--name values must be unique and non-empty, got {labels}")
    return list(zip(labels, models, adapters, strict=True))


def _unique(labels: list[str]) -> list[str]:
    """``["sft", "sft"]`` -> ``["sft", "sft (2)"]``."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


# ---- data ---------------------------------------------------------------------------------------------------------
def open_records(data: str | None, models: list[ModelSpec]) -> tuple[list[dict], str]:
    """The open-ended records and where they came from (see the module help for the defaults)."""
    if data:
        return load_records(data).records, data
    for _, _, adapter in models:
        split = Path(adapter) / EVAL_SPLIT_FILE if adapter else None
        if split is not None and split.is_file():
            return load_records(split).records, str(split)
    defaults = DataArguments()
    report, _, held = load_split(defaults)
    where = ", ".join(report.sources)
    return held, f"{where} (held-out split: eval_size={defaults.eval_size}, seed={defaults.split_seed})"


# ---- the command --------------------------------------------------------------------------------------------------
def run(args: EvalArguments, judge_config: JudgeConfig) -> int:
    """Run ``medgspo eval`` on parsed flags; returns the exit code (errors are raised for the entry point)."""
    args.check()
    if args.task == "open":  # a bad judge key, model name or balance stops here, before any model loads
        preflight(judge_config)
    models = resolve_models(args.model, args.adapter, args.name)
    for _, model, adapter in models:
        check_model_arguments(model, adapter)
    task = _mcq_task(args, models) if args.task == "mcq" else _open_task(args, judge_config, models)
    summaries = evaluate(task, models, args.output_dir, args.generation())
    print("\n" + task.table(summaries) + "\n")
    for label, path in task.outputs(args.output_dir):
        print(f"{label:<12} {path}")
    return 0


def _open_task(args: EvalArguments, config: JudgeConfig, models: list[ModelSpec]) -> Task:
    records, source = open_records(args.data[0] if args.data else None, models)
    records = records[: args.limit] if args.limit else records
    logger.info("Open-ended evaluation of %d model(s) on %d question(s) from %s", len(models), len(records), source)
    return OpenTask(records, config)


def _mcq_task(args: EvalArguments, models: list[ModelSpec]) -> Task:
    benchmarks = load_benchmarks(args.data, args.mcq_layout, args.subjects, args.limit)
    for bench in benchmarks:
        logger.info(
            "%s: %d question(s) from %s (%s layout; %d multi-answer skipped; %d key mismatch(es))",
            bench.name,
            len(bench.items),
            bench.source,
            bench.layout,
            bench.skipped_multi,
            len(bench.key_mismatches),
        )
    logger.info("Multiple-choice evaluation of %d model(s), %d sample(s) per question", len(models), args.num_samples)
    return MCQTask(benchmarks, args.num_samples, args.mcq_prompt)


COMMANDS = [
    Command(
        name="eval",
        arguments=(EvalArguments, JudgeConfig),
        run=run,
        description=DESCRIPTION,
    )
]
