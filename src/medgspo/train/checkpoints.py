"""Checkpoints a killed run can resume from: the newest *complete* ``checkpoint-N`` folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest *complete* ``checkpoint-N`` in ``output_dir`` (a process killed while saving leaves an incomplete
    folder behind: it has no readable ``trainer_state.json``, which the Trainer writes last, and is skipped)."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return str(folder)
        except (OSError, ValueError):
            logger.warning("Skipping incomplete checkpoint %s (interrupted while saving)", folder)
    return None
