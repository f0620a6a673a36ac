"""The loop both evaluations share: per model, load it once, answer every prompt in batches, free it, score.

    medgspo eval --adapter none --adapter runs/sft            # eval/cli.py builds a task and calls evaluate()

:func:`evaluate` runs one :class:`Task` on several ``(name, model, adapter)`` triples. It writes the generations
(one line per model and prompt, with a ``model`` field; rewritten after each model, so a crash in a later model
keeps the finished ones), then the summaries keyed by name and the task's own reports. A task says only what
differs: the prompts, how one model's generations are scored and summarised, and its report files. The open task
(:class:`medgspo.eval.open_ended.OpenTask`) scores with the judge, the multiple-choice task
(:class:`medgspo.eval.mcq.MCQTask`) by letter match.
"""

from __future__ import annotations

import gc
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tqdm.auto import tqdm

from medgspo.errors import ConfigError
from medgspo.modeling.generation import Generation, generate
from medgspo.modeling.loading import load_for_inference
from medgspo.utils.io import write_json, write_jsonl

logger = logging.getLogger(__name__)

ModelSpec = tuple[str, str, str | None]  # (name, model, adapter)
Summaries = dict[str, dict[str, Any]]


@dataclass
class GenerationSettings:
    """How every model answers. ``do_sample`` samples with the model card's settings
    (:data:`medgspo.modeling.generation.CARD_SAMPLING`), else decoding is greedy; batch ``i`` is seeded ``seed + i``."""

    batch_size: int = 16
    max_new_tokens: int = 256
    do_sample: bool = False
    seed: int = 0
    show_progress: bool = True

    def check(self) -> None:
        """Values that are wrong before any model loads; the message names the flag."""
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size must be >= 1 (got {self.batch_size})")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max_new_tokens must be >= 1 (got {self.max_new_tokens})")

    def recorded(self) -> dict[str, Any]:
        """The settings every summary records."""
        return {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "seed": self.seed}


class Task(ABC):
    """What one kind of evaluation adds to the shared loop: prompts, scoring, summary and report files.

    ``files`` maps a label to a file name in the output folder; :func:`evaluate` writes ``files["generations"]``
    and ``files["summaries"]``, :meth:`write_reports` the others.
    """

    files: ClassVar[dict[str, str]]

    def __init__(self, prompts: list[str]) -> None:
        self.prompts = prompts

    def start(self) -> None:  # noqa: B027  (most tasks need nothing here)
        """Called before the first model loads (the open task builds its judge here, so a bad key fails first)."""

    def close(self) -> None:  # noqa: B027
        """Called once when the run ends, also after an error."""

    @abstractmethod
    def score(
        self, generations: list[Generation], label: str, settings: GenerationSettings
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One model's rows (one per prompt, in order) and its summary."""

    @abstractmethod
    def table(self, summaries: Mapping[str, Mapping[str, Any]]) -> str:
        """The side-by-side Markdown table of the models' summaries."""

    @abstractmethod
    def write_reports(self, summaries: Summaries, output_dir: Path) -> None:
        """Write the task's report files (everything in ``files`` but the generations and summaries)."""

    def outputs(self, output_dir: str | Path) -> list[tuple[str, Path]]:
        """``(label, path)`` of every file a run writes, for the user to open."""
        return [(label, Path(output_dir) / name) for label, name in self.files.items()]


def completion_fields(generation: Generation) -> dict[str, Any]:
    """The row fields every task records about a completion."""
    split = generation.split
    return {
        "completion": generation.text,
        "thinking": split.thinking,
        "answer": split.answer,
        "well_formed": split.well_formed,
        "n_tokens": generation.n_tokens,
    }


def check_names(models: list[ModelSpec]) -> None:
    """Model names label table rows and generation lines, so they must be unique and non-empty."""
    names = [m[0] for m in models]
    if not models:
        raise ConfigError("no models to evaluate")
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"--name values must be unique and non-empty, got {names}")


def generate_answers(
    model: str, adapter: str | None, prompts: list[str], settings: GenerationSettings, desc: str = "generating"
) -> list[Generation]:
    """Load ``model`` (+ ``adapter``) once, answer every prompt in batches with a progress bar, free the model."""
    import torch

    lm, tokenizer, chat_format = load_for_inference(model, adapter)
    results: list[Generation] = []
    try:
        starts = range(0, len(prompts), settings.batch_size)
        for i, start in enumerate(tqdm(starts, desc=desc, unit="batch", disable=not settings.show_progress)):
            chunk = prompts[start : start + settings.batch_size]
            results += generate(
                lm,
                tokenizer,
                chat_format,
                chunk,
                max_new_tokens=settings.max_new_tokens,
                batch_size=settings.batch_size,
                do_sample=settings.do_sample,
                seed=settings.seed + i,
            )
    finally:
        del lm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


@dataclass
class Evaluation:
    """Every model's summary and every scored row (one per model and question, as in the generations file)."""

    summaries: Summaries
    rows: list[dict[str, Any]]


def evaluate(
    task: Task, models: list[ModelSpec], output_dir: str | Path, settings: GenerationSettings | None = None
) -> Summaries:
    """Run ``task`` on each ``(name, model, adapter)``, write its files into ``output_dir``, return the summaries."""
    return evaluate_all(task, models, output_dir, settings).summaries


def evaluate_all(
    task: Task, models: list[ModelSpec], output_dir: str | Path, settings: GenerationSettings | None = None
) -> Evaluation:
    """:func:`evaluate`, returning the scored rows too.

    A summary is the task's plus ``model``, ``adapter``, the generation settings and ``hit_token_limit`` (answers
    that used the whole ``max_new_tokens`` budget).
    """
    settings = settings or GenerationSettings()
    settings.check()
    check_names(models)
    out = Path(output_dir)
    summaries: Summaries = {}
    all_rows: list[dict[str, Any]] = []
    task.start()
    try:
        for name, model, adapter in models:
            generations = generate_answers(model, adapter, task.prompts, settings, desc=f"{name}: generating")
            rows, summary = task.score(generations, name, settings)
            hit_limit = sum(g.n_tokens >= settings.max_new_tokens for g in generations)
            summaries[name] = {
                **summary,
                "model": model,
                "adapter": adapter,
                **settings.recorded(),
                "hit_token_limit": hit_limit,
            }
            all_rows += [{"model": name, **row} for row in rows]
            write_jsonl(out / task.files["generations"], all_rows)
    finally:
        task.close()
    write_json(out / task.files["summaries"], summaries)
    task.write_reports(summaries, out)
    return Evaluation(summaries, all_rows)
