"""The model card's body, section by section, from a :class:`~medgspo.publish.run_files.RunRecord` (pure: no I/O).

Every figure is looked up in what the run recorded; a value the run did not record prints as ``not recorded`` and
a section whose file is missing says which file it needs. :mod:`medgspo.publish.card` assembles the sections.
"""

from __future__ import annotations

from typing import Any

from medgspo.publish.run_files import RunRecord, StageFiles

MISSING = "not recorded"


def fmt(value: Any) -> str:
    """A table cell: numbers short, lists joined, ``None`` as ``not recorded``.

    >>> fmt(0.000500), fmt(1.1522484868764877), fmt(["q_proj", "v_proj"]), fmt(None), fmt(True)
    ('0.0005', '1.152', 'q_proj, v_proj', 'not recorded', 'yes')
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "none"
    return str(value)


def table(header: tuple[str, str], rows: list[tuple[str, Any]]) -> str:
    """A two-column markdown table."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {fmt(value)} |" for name, value in rows]
    return "\n".join(lines)


def _get(source: dict[str, Any] | None, key: str) -> Any:
    return (source or {}).get(key)


def lora_rows(stage: StageFiles) -> list[tuple[str, Any]]:
    """LoRA rank, alpha, dropout, targets and fully trained modules, from ``adapter_config.json``."""
    config = stage.adapter_config
    targets = _get(config, "target_modules")
    return [
        ("LoRA rank r", _get(config, "r")),
        ("LoRA alpha", _get(config, "lora_alpha")),
        ("LoRA dropout", _get(config, "lora_dropout")),
        ("LoRA target modules", sorted(targets) if isinstance(targets, list) else targets),
        ("trained in full (modules_to_save)", _get(config, "modules_to_save") or []),
    ]


def optimizer_rows(settings: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """Learning rate, schedule, per-device batch, accumulation, steps and seed, from ``training_args.bin``."""
    max_steps = _get(settings, "max_steps")
    return [
        ("learning rate", _get(settings, "learning_rate")),
        ("scheduler", _get(settings, "lr_scheduler_type")),
        ("per-device batch", _get(settings, "per_device_train_batch_size")),
        ("gradient accumulation", _get(settings, "gradient_accumulation_steps")),
        ("epochs", _get(settings, "num_train_epochs") if max_steps in (None, -1) else None),
        ("max steps", max_steps if max_steps not in (None, -1) else None),
        ("seed", _get(settings, "seed")),
    ]


def sft_section(stage: StageFiles | None) -> str:
    """SFT: data, LoRA, optimizer and losses."""
    if stage is None:
        return "### SFT\n\nNo SFT record found (`sft_summary.json` beside the adapter, or the run's `sft/`)."
    summary, settings = stage.summary, stage.settings
    losses = (_get(summary, "eval_loss_before"), _get(summary, "eval_loss_after"))
    rows = [
        ("base model", _get(summary, "base_model")),
        ("training records", _get(summary, "train")),
        ("held-out records", _get(summary, "eval")),
        ("max length (tokens)", _get(settings, "max_length")),
        *lora_rows(stage),
        *optimizer_rows(settings),
        ("optimizer steps taken", _get(summary, "global_step")),
        ("training loss", _get(summary, "train_loss")),
        ("held-out loss before -> after", None if None in losses else f"{fmt(losses[0])} -> {fmt(losses[1])}"),
    ]
    return f"### SFT (TRL `SFTTrainer`)\n\n{_settings_note(stage)}{table(('setting', 'value'), rows)}"


def gspo_section(stage: StageFiles | None) -> str:
    """GSPO: the sequence-level settings, group size, lengths, sampling, optimizer."""
    if stage is None:
        return "### GSPO\n\nNo GSPO record found (`gspo_summary.json`): this model was not trained with GSPO."
    summary, settings = stage.summary, stage.settings
    recorded = {**(_get(summary, "config") or {}), **(settings or {})}
    per_step = _completions_per_step(settings, summary)
    group = _get(recorded, "num_generations")
    rows = [
        ("importance-sampling level", _get(recorded, "importance_sampling_level")),
        ("loss type", _get(recorded, "loss_type")),
        ("clip epsilon (low / high)", _pair(_get(recorded, "epsilon"), _get(recorded, "epsilon_high"))),
        ("KL beta", _get(recorded, "beta")),
        ("completions per prompt G", group),
        ("completions per optimizer step", per_step),
        ("prompts per optimizer step", per_step // group if per_step and group else None),
        ("steps per generation", _get(recorded, "steps_per_generation")),
        ("iterations per batch", _get(recorded, "num_iterations")),
        ("max completion length (tokens)", _get(settings, "max_completion_length")),
        ("sampling temperature / top-p / top-k", _triple(settings, ("temperature", "top_p", "top_k"))),
        ("training prompts", _get(summary, "train_prompts")),
        ("rollouts", _get(summary, "rollouts")),
        *lora_rows(stage),
        *optimizer_rows(settings),
        ("optimizer steps taken", _get(summary, "global_step")),
    ]
    return f"### GSPO (TRL `GRPOTrainer`)\n\n{_settings_note(stage)}{table(('setting', 'value'), rows)}"


def _settings_note(stage: StageFiles) -> str:
    if stage.settings is None:
        return f"`{stage.folder}/training_args.bin` is missing or unreadable: its settings are not recorded.\n\n"
    return ""


def _completions_per_step(settings: dict[str, Any] | None, summary: dict[str, Any] | None) -> int | None:
    batch, accumulation = _get(settings, "per_device_train_batch_size"), _get(settings, "gradient_accumulation_steps")
    if batch is None or accumulation is None:
        return None
    return batch * accumulation * (_get(summary, "processes") or 1)


def _pair(low: Any, high: Any) -> str | None:
    return None if low is None else f"{fmt(low)} / {fmt(high if high is not None else low)}"


def _triple(settings: dict[str, Any] | None, keys: tuple[str, ...]) -> str | None:
    values = [_get(settings, k) for k in keys]
    return None if all(v is None for v in values) else " / ".join(fmt(v) for v in values)


def reward_section(record: RunRecord) -> str:
    """The reward functions and weights, the judge, its statistics in training and its calibration."""
    gspo = record.stages.get("gspo")
    summary = gspo.summary if gspo else None
    if summary is None:
        return "## Reward\n\nNo GSPO summary (`gspo_summary.json`): no reward was used."
    weights = _get(summary, "reward_weights") or {}
    parts = ["## Reward", table(("reward function", "weight"), list(weights.items()))]
    judge = _get(summary, "judge") or {}
    parts.append(
        table(
            ("judge", "value"),
            [("backend", _get(judge, "backend")), ("model", _get(judge, "model")), ("rubric", _get(judge, "rubric"))],
        )
    )
    stats = _get(summary, "judge_stats")
    if stats:
        tiers = _get(stats, "tiers") or {}
        tier_text = " / ".join(f"{k} {v}" for k, v in tiers.items()) if tiers else None
        rows = [
            ("judgments during training", _get(stats, "judgments")),
            ("judge calls (the rest: cache, rules, duplicates)", _get(stats, "calls")),
            ("failures / abstentions", _pair(_get(stats, "failures"), _get(stats, "abstained"))),
            ("verdict tiers A / B / C / D / E", tier_text),
            ("judge cost (USD)", _get(stats, "cost_usd")),
        ]
        parts.append(table(("judge in training", "value"), rows))
    parts.append(calibration_text(record.calibration))
    return "\n\n".join(parts)


def calibration_text(calibration: dict[str, Any] | None) -> str:
    """The judge's agreement with labelled verdicts, or how to measure it."""
    if calibration is None:
        return (
            "Judge calibration: not run for this model (no `calibration.json` in the run; "
            "`medgspo judge calibrate --output RUN/calibration` writes one)."
        )
    judge = _get(calibration, "judge") or {}
    rows = [
        ("labelled items", _get(calibration, "n")),
        ("judge", " ".join(fmt(judge[k]) for k in ("backend", "model", "rubric") if k in judge) or None),
        ("accuracy", _get(calibration, "accuracy")),
        ("coverage (decided)", _get(calibration, "coverage")),
        ("accuracy on decided items", _get(calibration, "decided_accuracy")),
        (
            "Cohen's kappa / linear-weighted kappa",
            _pair(_get(calibration, "kappa"), _get(calibration, "weighted_kappa")),
        ),
        (
            "repeats / verdict change rate",
            _pair(_get(calibration, "repeats"), _get(calibration, "verdict_change_rate")),
        ),
    ]
    return table(("judge calibration (`medgspo judge calibrate`)", "value"), rows)


def dynamics_section(plots: list[str]) -> str:
    """The training plots, linked relative to the card."""
    if not plots:
        return "## Training dynamics\n\nNo plots in the run (`gspo/plots/*.png`)."
    images = "\n\n".join(f"![{p.rsplit('/', 1)[-1].removesuffix('.png')}]({p})" for p in plots)
    return f"## Training dynamics\n\n{images}"


def evaluation_section(record: RunRecord) -> str:
    """One table per evaluated split (every model the run compared), and the paired GSPO - SFT difference."""
    if not record.evaluation:
        return (
            "## Evaluation\n\nNo evaluation in the run (`eval/*/eval.json` of `medgspo pipeline` or `medgspo eval`)."
        )
    parts = ["## Evaluation"]
    for split, models in record.evaluation.items():
        lines = [
            f"### {split} questions",
            "",
            "| model | n | format compliance | mean score [95% CI] | tiers +2.0 / +0.5 / 0.0 / -0.5 / -1.0 |",
            "|---|---:|---:|---|---|",
        ]
        for name, row in models.items():
            lines.append(_eval_row(name, row))
        judge = next((r.get("judge") for r in models.values() if isinstance(r, dict) and r.get("judge")), None)
        if judge:
            lines += ["", f"Judge: `{fmt(judge.get('backend'))}` ({fmt(judge.get('model'))})."]
        paired = (record.paired or {}).get(split)
        if paired:
            ci = paired.get("ci") or [None, None]
            lines.append(
                f"GSPO - SFT, paired on {paired.get('n')} questions: {fmt(paired.get('mean'))} "
                f"[{fmt(ci[0])}, {fmt(ci[1])}]."
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _eval_row(name: str, row: Any) -> str:
    if not isinstance(row, dict):
        return f"| {name} | {MISSING} | | | |"
    compliance = row.get("format_compliance")
    interval = f"[{fmt(row.get('score_ci_low'))}, {fmt(row.get('score_ci_high'))}]"
    tiers = row.get("tier_counts") or {}
    return (
        f"| {name} | {fmt(row.get('n'))} | {fmt(None if compliance is None else f'{compliance:.1%}')} | "
        f"{fmt(row.get('mean_score'))} {interval} | {' / '.join(str(v) for v in tiers.values()) or MISSING} |"
    )
