"""What a person sees in the terminal while the stages run: a start line, one progress bar and an end line per stage.

transformers prints every logged metric dict (about 50 keys per GSPO step) above its progress bar, ``datasets``
draws a bar for each ``map``/``filter``, and libraries repeat the same harmless warnings in every stage. Here:

* :func:`progress_text`: the few numbers a bar shows (pure): the loss, or the reward mean with the judge's tier mix;
* :func:`quiet_libraries`: ``datasets`` bars and transformers' info chatter off; each known, harmless warning
  (:data:`KNOWN_WARNINGS`) is shown once per run as one line that says what it means;
* :func:`announce`: a stage's start and end lines;
* :func:`stage_console`: a ``TrainerCallback`` that replaces transformers' progress printer with one bar.

Every metric still reaches ``metrics.jsonl`` and TRL's ``report_to``; ``--verbose`` prints the dicts again.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("medgspo")

# (pattern of the library's message, what it means for a medgspo user): shown once per run, then silenced.
KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
    (
        r"tie_word_embeddings|embeddings are no longer tied|tied weights",
        "the tiny model ties its input and output embeddings; PEFT unties them when the adapter also trains the "
        "embeddings or is merged (expected, nothing lost)",
    ),
    (
        r"falling back to its reference PyTorch|fast path is not available|flash-linear-attention|causal.conv1d",
        "Qwen3.5's linear-attention layers run on transformers' PyTorch implementation (CUDA kernels are a GPU "
        "extra: pip install -e '.[gpu]'); correct, slower",
    ),
    (
        r"generation flags are not valid|generation_config|do_sample.*is set to .False.",
        "a sampling setting that greedy decoding ignores (expected in evaluation)",
    ),
    (
        r"use_cache=True. is incompatible with gradient checkpointing|Caching is incompatible",
        "no KV cache during training passes (expected)",
    ),
    (
        r"gradient_checkpointing. is deprecated|is_gradient_checkpointing. is deprecated",
        "transformers 5 renamed gradient checkpointing to activation checkpointing; TRL and the recipes still use "
        "the old name, which works until transformers 6 (pyproject: transformers<6)",
    ),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE), meaning) for p, meaning in KNOWN_WARNINGS)
_CHATTY_LOGGERS = ("transformers", "trl", "peft", "accelerate", "datasets", "torch.distributed")


def progress_text(logs: Mapping[str, Any]) -> str:
    """The few numbers a stage's progress bar shows for one log entry (``""`` when it has none of them).

    >>> progress_text({"loss": 1.23456, "grad_norm": 3.0, "learning_rate": 1e-4})
    'loss 1.235'
    >>> progress_text({"reward": 0.4, "judge/tier_A": 12.0, "judge/tier_D": 3.0, "judge/tier_E": 17.0,
    ...                "judge/abstained": 0.0, "loss": 0.01})
    'reward +0.400 | judge A 12 D 3 E 17'
    """
    if "reward" in logs:
        tiers = [(t, logs.get(f"judge/tier_{t}", 0.0)) for t in "ABCDE"]
        tiers.append(("none", logs.get("judge/abstained", 0.0) + logs.get("judge/failures", 0.0)))
        mix = " ".join(f"{name} {count:.0f}" for name, count in tiers if count)
        return f"reward {logs['reward']:+.3f}" + (f" | judge {mix}" if mix else "")
    if "loss" in logs:
        return f"loss {logs['loss']:.3f}"
    return ""


def announce(message: str) -> None:
    """One line a person reads between the bars (a stage starting or ending)."""
    logger.info(message)


class _KnownWarnings(logging.Filter):
    """Shows each known warning once, as what it means; passes every other record unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def explain(self, message: str) -> str | None:
        """``None`` to pass the message as it is, ``""`` to drop it, or the one line to show instead."""
        for pattern, meaning in _COMPILED:
            if pattern.search(message):
                if meaning in self.seen:
                    return ""
                self.seen.add(meaning)
                return f"note (shown once): {meaning}"
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_CHATTY_LOGGERS):  # medgspo's own notes always pass
            return True
        shown = self.explain(record.getMessage())
        if shown is None:
            return True
        if shown:
            record.msg, record.args = shown, ()
            return True
        return False


_FILTER = _KnownWarnings()
_SETTINGS = {"verbose": False}  # set once per process by the command line, like a logging level


def quiet_libraries(verbose: bool = False) -> None:
    """Turn off ``datasets``' per-map bars and the libraries' info logs, and show each known warning once per
    run (:data:`KNOWN_WARNINGS`). ``verbose`` leaves everything as the libraries print it, and the stage bars
    write every metric dict again."""
    _SETTINGS["verbose"] = verbose
    if verbose:
        return
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
        hf_logging.disable_progress_bar()  # "Loading weights" bars of every from_pretrained
    except ImportError:  # pragma: no cover - a dependency
        pass
    # A logger's own filters do not see its children's records (transformers.models.x ...): filter the handlers.
    for name in (*_CHATTY_LOGGERS, ""):
        library = logging.getLogger(name)
        if name:
            library.setLevel(max(library.level, logging.WARNING))
        for handler in library.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    previous = warnings.showwarning
    if getattr(previous, "_medgspo", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        shown = _FILTER.explain(str(message))
        if shown is None:
            previous(message, category, filename, lineno, file, line)
        elif shown:
            print(shown, file=file or sys.stderr)  # noqa: T201 - the one line that replaces the warning

    showwarning._medgspo = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def stage_console(stage: str, verbose: bool | None = None):
    """A ``TrainerCallback`` with one progress bar for ``stage``: steps done, and :func:`progress_text` of the last
    log entry. ``verbose`` (default: the command line's ``--verbose``) also writes every log dict above the bar."""
    from tqdm.auto import tqdm

    verbose = _SETTINGS["verbose"] if verbose is None else verbose
    from transformers import TrainerCallback

    class StageConsole(TrainerCallback):
        def __init__(self) -> None:
            self.bar = None
            self.shown = ""  # GSPO logs the reward on rollout steps and only the loss on the others: keep the reward

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=stage, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs:
                return
            if verbose:
                self.bar.write(json.dumps(logs, ensure_ascii=False, default=str))
            text = progress_text(logs)
            if text and not (text.startswith("loss") and self.shown.startswith("reward")):
                self.shown = text
                self.bar.set_postfix_str(text, refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return StageConsole()


def use_stage_console(trainer: Any, stage: str, verbose: bool | None = None) -> None:
    """Replace transformers' progress printer (bar + every log dict) of ``trainer`` with :func:`stage_console`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(stage_console(stage, verbose))
