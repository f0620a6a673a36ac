"""Find and read the files a run left behind, for the model card: each stage's summary, saved settings and adapter
config, the evaluation tables, the judge's calibration, the training plots, the chat format.

    record = read_run(Path("runs/default/gspo"))     # the adapter `medgspo export --adapter` names

A run of ``medgspo pipeline`` is laid out as ``RUN/{pretrain,sft,gspo}/`` (adapters, ``*_summary.json``,
``training_args.bin``, ``plots/``), ``RUN/eval/{heldout,seen}/eval.json`` and ``RUN/summary.json``; an adapter
trained by ``medgspo sft``/``gspo`` alone has its own folder only. What is missing stays ``None`` and the card
says so; :attr:`RunRecord.sources` lists every file that was read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.publish.training_args import read_training_args

logger = logging.getLogger(__name__)

STAGES = ("sft", "gspo")
CALIBRATION_FILE = "calibration.json"


@dataclass
class StageFiles:
    """What one training stage recorded."""

    folder: Path
    summary: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None  # training_args.bin, read without running it
    adapter_config: dict[str, Any] | None = None
    plots: list[Path] = field(default_factory=list)


@dataclass
class RunRecord:
    """Everything the card is written from; ``None`` where the run has no such file."""

    adapter: Path
    stage: str | None  # "gspo" or "sft": which stage made the exported adapter
    run_dir: Path | None
    stages: dict[str, StageFiles]
    evaluation: dict[str, dict[str, Any]]  # split ("heldout", "seen") -> eval.json
    paired: dict[str, Any] | None  # summary.json's paired GSPO - SFT differences
    calibration: dict[str, Any] | None
    chat_format: dict[str, Any] | None
    language: str | None
    sources: list[str]


def read_json(path: Path, sources: list[str]) -> Any:
    """The JSON at ``path`` (recorded in ``sources``), or ``None`` when missing or malformed."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("Cannot read %s (%s); the card leaves it out", path, exc)
        return None
    sources.append(str(path))
    return value


def stage_of(folder: Path) -> str | None:
    """``gspo`` or ``sft`` when the folder holds that stage's summary."""
    return next((s for s in reversed(STAGES) if (folder / f"{s}_summary.json").is_file()), None)


def read_stage(folder: Path, name: str, sources: list[str]) -> StageFiles:
    """One stage's summary, settings, adapter config and plots."""
    settings = read_training_args(folder / "training_args.bin")
    if settings is not None:
        sources.append(str(folder / "training_args.bin"))
    plots = sorted((folder / "plots").glob("*.png"))
    sources.extend(str(p) for p in plots)
    return StageFiles(
        folder,
        read_json(folder / f"{name}_summary.json", sources),
        settings,
        read_json(folder / "adapter_config.json", sources),
        plots,
    )


def sft_folder(adapter: Path, gspo_summary: dict[str, Any] | None) -> Path | None:
    """The SFT adapter GSPO continued: as its summary records it, else the run's ``sft/`` beside it."""
    recorded = (gspo_summary or {}).get("sft_adapter")
    for candidate in ([Path(recorded), adapter.parent / Path(recorded).name] if recorded else []) + [
        adapter.parent / "sft"
    ]:
        if stage_of(candidate) == "sft":
            return candidate
    return None


def find_calibration(run_dir: Path | None, given: Path | None, sources: list[str]) -> dict[str, Any] | None:
    """``calibration.json`` of ``medgspo judge calibrate``: ``given`` (a file or its folder), else one in the run."""
    if given is not None:
        path = given / CALIBRATION_FILE if given.is_dir() else given
        return read_json(path, sources)
    if run_dir is None:
        return None
    found = sorted([*run_dir.glob(CALIBRATION_FILE), *run_dir.glob(f"*/{CALIBRATION_FILE}")])
    return read_json(found[0], sources) if found else None


def is_chinese(texts: list[str]) -> bool:
    """Whether CJK characters make up at least a third of the letters.

    >>> is_chinese(["患者发热咳嗽3天", "fever"]), is_chinese(["fever and cough"])
    (True, False)
    """
    letters = [c for t in texts for c in t if c.isalpha()]
    cjk = sum("\u4e00" <= c <= "\u9fff" for c in letters)
    return bool(letters) and cjk * 3 >= len(letters)


def data_language(sft: StageFiles | None, sources: list[str]) -> str | None:
    """``zh`` when the held-out training records are Chinese, ``None`` when the run kept none."""
    path = sft.folder / "eval_split.jsonl" if sft else None
    if path is None or not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sources.append(str(path))
    texts = [str(r.get("Question", "")) + str(r.get("Response", "")) for r in rows]
    return "zh" if is_chinese(texts) else None


def read_run(adapter: Path, calibration: Path | None = None) -> RunRecord:
    """Read what the run of ``adapter`` recorded (see the module docstring for the layout)."""
    sources: list[str] = []
    stage = stage_of(adapter)
    stages: dict[str, StageFiles] = {}
    if stage is not None:
        stages[stage] = read_stage(adapter, stage, sources)
    if stage == "gspo":
        sft = sft_folder(adapter, stages["gspo"].summary)
        if sft is not None:
            stages["sft"] = read_stage(sft, "sft", sources)
    parent = adapter.parent
    is_run = stage is not None and any((parent / f).is_file() for f in ("summary.json", "pipeline_args.json"))
    run_dir = parent if is_run else None
    evaluation = {}
    if run_dir is not None:
        for path in sorted(run_dir.glob("eval/*/eval.json")):
            table = read_json(path, sources)
            if isinstance(table, dict):
                evaluation[path.parent.name] = table
    summary = read_json(run_dir / "summary.json", sources) if run_dir else None
    return RunRecord(
        adapter=adapter,
        stage=stage,
        run_dir=run_dir,
        stages=stages,
        evaluation=evaluation,
        paired=(summary or {}).get("paired"),
        calibration=find_calibration(run_dir, calibration, sources),
        chat_format=read_json(adapter / "chat_format.json", sources),
        language=data_language(stages.get("sft"), sources),
        sources=sources,
    )
