"""The steps every training stage shares: the trainer's console and checks, where a run resumes, saving what it
trained.

    ready_trainer(trainer, "SFT")                            # one progress bar; LoRA coverage; kernels per phase
    resume = resume_point(training_args, output_dir)         # the last checkpoint with --resume, else None
    finish_stage(trainer, output_dir, summary_file, summary, chat_format=fmt, tokenizer=tok)

Saving: every process takes part in ``trainer.save_model`` (ZeRO-3 gathers the weights there) and one writes; the
main process then adds the chat files an adapter folder needs to be used alone (``chat_format.json`` and the
tokenizer) and the stage's summary JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat
from medgspo.train.callbacks import save_chat_files
from medgspo.train.checkpoints import last_checkpoint
from medgspo.utils.console import use_stage_console
from medgspo.utils.io import write_json

logger = logging.getLogger(__name__)


def ready_trainer(trainer: Any, stage: str) -> Any:
    """Our console for the trainer (one bar, one start and end line), a note of what the LoRA adapts per layer kind
    and the GPU kernels to install, and the gated-DeltaNet kernels of each phase (chosen, checked, said once)."""
    from medgspo.train.backends import log_model_notes
    from medgspo.train.kernels import apply_kernel_choice

    use_stage_console(trainer, stage)
    log_model_notes(trainer.model)
    padding_free = bool(getattr(trainer.args, "padding_free", False))
    choice = apply_kernel_choice(trainer.model, trainer.accelerator.device.type, padding_free=padding_free)
    trainer.kernel_choice = choice  # finish_stage records it in the stage's summary
    return trainer


def resume_point(training_args: Any, output_dir: Path) -> str | None:
    """The checkpoint to resume from with ``--resume`` (a warning when there is none), else ``None``."""
    if not getattr(training_args, "resume", False):
        return None
    checkpoint = last_checkpoint(output_dir)
    if checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", output_dir)
    return checkpoint


def finish_stage(
    trainer: Any,
    output_dir: Path,
    summary_file: str,
    summary: dict[str, Any],
    *,
    chat_format: ChatFormat | None = None,
    tokenizer: Any = None,
) -> bool:
    """Save the trained weights, the chat files and ``summary_file`` (with the gated-DeltaNet kernels each phase
    ran on); True in the process that wrote them."""
    choice = getattr(trainer, "kernel_choice", None)
    if choice is not None:
        summary["gated_deltanet_kernels"] = {"no_grad": choice.no_grad, "training": choice.grad, "why": choice.reason}
    trainer.save_model(str(output_dir))  # every process takes part (ZeRO-3 gathers the weights), one writes
    if not trainer.is_world_process_zero():
        return False
    if chat_format is not None:
        save_chat_files(output_dir, chat_format, tokenizer)
    elif tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    write_json(output_dir / summary_file, summary)
    return True
