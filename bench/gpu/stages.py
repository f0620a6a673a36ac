"""The GPU check's child processes: ``build`` (the model folder) and ``variant`` (SFT then GSPO on it, through
medgspo's own stages, with or without the fla kernels). ``check.py`` starts each as
``python check.py --child PLAN.json``; the child writes its result JSON after every step, so a child killed at the
deadline still leaves what it measured.

The stages run exactly as ``medgspo sft`` / ``medgspo gspo`` would, from the model card's recipes in
``recipes/qwen3.5-4b-medical/`` plus overrides: the random model folder, the bundled data, a few steps, no
checkpoints, the fake local judge. medgspo itself is not changed; in the child process only, two wrappers
(:mod:`probes`) add a timing callback to every ``Trainer`` the stages build and keep a copy of TRL's own timings.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import probes

VARIANTS = ("fast", "fla", "torch")
# the fast variant's GSPO switches: the LoRA merged while generating, a compiled static-cache decode
FAST_ROLLOUTS = [
    "--merge_adapter_for_rollouts",
    "true",
    "--rollout_compile",
    "true",
    "--cache_implementation",
    "static",
]
SFT_SHARE = 0.35  # of a variant's time budget; GSPO gets the rest
SAVE_RESERVE_S = 15.0  # GSPO stops this long before the variant's deadline (saving the adapter, plots)
GENERATE = "GRPOTrainer.transformers.generate"
PREPARE = "GRPOTrainer._prepare_inputs"
REWARDS = "GRPOTrainer._calculate_rewards"


def run_child(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    if plan["role"] == "build":
        return build(plan)
    if plan["role"] == "rollout":
        from rollout import run_rollouts

        return run_rollouts(plan)
    return Variant(plan).run()


def build(plan: dict[str, Any]) -> int:
    from model import build_model_folder

    from medgspo.utils.io import write_json

    result: dict[str, Any] = {"status": "running", "machine": probes.machine()}
    try:
        result |= build_model_folder(Path(plan["model_dir"]), plan["tiny"], plan["tokenizer"])
        result["status"] = "ok"
    except Exception:  # noqa: BLE001 - recorded for the JSON, then the parent stops
        result |= {"status": "error", "error": traceback.format_exc()[-4000:]}
    write_json(plan["result"], result)
    return 0 if result["status"] == "ok" else 1


def recipe_overrides(plan: dict[str, Any], output_dir: Path, steps: int) -> list[str]:
    """The flags both stages add to the card's recipe."""
    from medgspo.data.records import BUNDLED_DATA

    args = ["--model_name_or_path", plan["model_dir"], "--dataset_name", str(BUNDLED_DATA), "--eval_size", "0"]
    args += ["--output_dir", str(output_dir), "--max_steps", str(steps), "--save_strategy", "no"]
    args += ["--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--seed", "42"]
    if plan["tiny"]:
        args += ["--dtype", "float32", "--bf16", "false", "--use_cpu", "true"]
    return args


class Variant:
    """SFT then GSPO for one variant: ``fast`` (medgspo's kernel choice per phase, the LoRA merged for rollouts, a
    compiled static-cache decode), ``fla`` (the kernel choice, TRL's rollouts as they are), ``torch`` (fla blocked:
    transformers' PyTorch path everywhere)."""

    def __init__(self, plan: dict[str, Any]):
        self.plan = plan
        self.work = Path(plan["work_dir"])
        self.result: dict[str, Any] = {"variant": plan["variant"], "status": "running", "stages": {}}
        self.events: list[tuple[str, float, float]] = []
        self.callback: Any = None
        self.deadline = time.perf_counter() + (plan["deadline"] - time.time())

    def save(self) -> None:
        from medgspo.utils.io import write_json

        write_json(self.plan["result"], {**self.result, "stages": {k: self.report(k, v) for k, v in self.stages()}})

    def stages(self):
        return self.result["stages"].items()

    def run(self) -> int:
        if self.plan["variant"] == "torch":
            probes.block_fla()
        from medgspo.train.gspo import GSPO_ARGUMENTS, run_gspo
        from medgspo.train.sft import SFT_ARGUMENTS, run_sft
        from medgspo.utils.cli import parse_args
        from medgspo.utils.paths import RECIPES

        self.result["fla"] = probes.fla_status()
        self.result["kernels"] = probes.kernel_report()
        self.result["fla_kernels_used"] = probes.uses_fla(self.result["kernels"])
        self.events = probes.record_trl_timings()
        probes.attach_to_trainers(lambda: self.callback)
        recipes = RECIPES / "qwen3.5-4b-medical"
        start = time.perf_counter()
        sft_deadline = start + SFT_SHARE * (self.deadline - start)

        sft_dir = self.work / "sft"
        sft_argv = [
            "--config",
            str(recipes / "sft.yaml"),
            *recipe_overrides(self.plan, sft_dir, self.plan["sft_steps"]),
        ]
        sft_argv += ["--eval_strategy", "no"]  # no held-out split: eval_size 0
        if self.plan["tiny"]:  # the PyTorch gated-DeltaNet path is slow on a CPU: short examples, no accumulation
            sft_argv += ["--max_length", "128", "--oversized", "truncate", "--gradient_accumulation_steps", "1"]
        self.stage("sft", lambda: run_sft(*parse_args(SFT_ARGUMENTS, sft_argv)), sft_argv, sft_deadline)

        gspo_argv = ["--config", str(recipes / "gspo.yaml")]
        gspo_argv += recipe_overrides(self.plan, self.work / "gspo", self.plan["gspo_steps"])
        gspo_argv += ["--judge_backend", "local", "--judge_base_url", self.plan["judge_url"]]
        gspo_argv += ["--judge_model", "fake-judge", "--log_completions", "false", "--max_prompts", "16"]
        if self.plan["tiny"]:
            gspo_argv += ["--max_completion_length", "16"]
        if self.plan["variant"] == "fast":
            gspo_argv += FAST_ROLLOUTS
        if (sft_dir / "adapter_config.json").is_file():
            gspo_argv += ["--sft_adapter", str(sft_dir)]
        gspo_deadline = self.deadline - SAVE_RESERVE_S
        out = self.stage("gspo", lambda: run_gspo(*parse_args(GSPO_ARGUMENTS, gspo_argv)), gspo_argv, gspo_deadline)
        if out is not None:
            self.result["stages"]["gspo"]["judge"] = out.summary.get("judge_stats")
        ok = all(s["status"] == "ok" for _, s in self.stages())
        self.result["status"] = "ok" if ok else "error"
        self.save()
        return 0 if ok else 1

    def stage(self, name: str, fn, argv: list[str], deadline: float):
        """Run one stage, timing its steps; a failure is recorded, not raised (the next stage still runs)."""
        stage: dict[str, Any] = {"status": "running", "steps": [], "_start": time.perf_counter(), "argv": argv}
        self.result["stages"][name] = stage
        probes.reset_peak_memory()
        self.callback = probes.make_step_callback(stage, deadline, self.save)
        self.save()
        out = None
        try:
            out = fn()
            stage["status"] = "ok"
        except Exception:  # noqa: BLE001 - recorded for the JSON
            stage["status"] = "error"
            stage["error"] = traceback.format_exc()[-4000:]
        stage["total_s"] = round(time.perf_counter() - stage["_start"], 2)
        stage["peak_gpu_memory_gib"] = probes.peak_memory_gib()
        stage["peak_rss_gib"] = probes.peak_rss_gib()
        self.save()
        return out

    def report(self, name: str, stage: dict[str, Any]) -> dict[str, Any]:
        """The stage as it goes into the JSON: per-step rows (TRL's timings split out) and a summary."""
        steps = probes.split_steps(stage["steps"], self.events)
        out = {k: v for k, v in stage.items() if not k.startswith("_") and k != "steps"}
        out["steps"] = steps
        out["summary"] = summarize(name, steps, stage.get("generation_batch_size"))
        return out


def summarize(name: str, steps: list[dict[str, Any]], generation_batch: int | None) -> dict[str, Any]:
    """Steady-state figures (median after the first step) of one stage (``sft`` or ``gspo``)."""
    seconds = [s["s"] for s in steps]
    out: dict[str, Any] = {"steps": len(steps), "first_step_s": seconds[0] if seconds else None}
    out["step_s"] = probes.steady(seconds)
    if name == "sft":
        tokens = _token_deltas(steps)
        out["tokens_per_step"] = probes.steady(tokens)
        out["tokens_per_s"] = probes.steady([t / s for t, s in zip(tokens, seconds, strict=False) if s])
        return out
    gen, train, rewards, rates = [], [], [], []
    for step in steps:
        timings = step.get("trl_timings_s", {})
        if GENERATE not in timings:
            continue
        gen.append(timings[GENERATE])
        train.append(step["s"] - timings.get(PREPARE, 0.0))
        rewards.append(timings.get(REWARDS, 0.0))
        mean_length = step.get("logs", {}).get("completions/mean_length")
        if mean_length and generation_batch:
            rates.append(mean_length * generation_batch / timings[GENERATE])
    out |= {
        "generation_s": probes.steady(gen),
        "training_s": probes.steady(train),
        "rewards_s": probes.steady(rewards),
        "rollout_tokens_per_s": probes.steady(rates),
        "completions_per_step": generation_batch,
    }
    return out


def _token_deltas(steps: list[dict[str, Any]]) -> list[float]:
    """Tokens trained per step, from TRL's cumulative ``num_tokens``."""
    seen = [s.get("logs", {}).get("num_tokens") for s in steps]
    if not seen or None in seen:
        return []
    return [b - a for a, b in zip([0.0, *seen[:-1]], seen, strict=True)]
