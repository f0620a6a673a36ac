"""Does the demo's headline hold where the floating-point results differ? The main job at several training seeds
and torch thread counts, side by side in one run.

    python bench/pipeline_seeds.py                              # seeds 42 1 2 x threads 1 2: six runs
    python bench/pipeline_seeds.py --seeds 42 --threads 2 -- --gspo.max_steps 10

Another thread count or seed changes the arithmetic (reduction order, sampled rollouts) the way another CPU does,
so this is how a claim is tested for machines we cannot borrow. Each run is ``medgspo pipeline --seed S`` in a
subprocess with ``OMP_NUM_THREADS=T``; runs with one thread go two at a time (one core each), two-thread runs go
alone. Prints one row per run: the paired GSPO - SFT difference on seen questions with its 95% interval (the
headline), both marginal intervals, distinct held-out answers after SFT and GSPO, and the wall time
(``summary.json``'s ``wall_s``); then whether every run keeps the three claims: paired interval above 0, GSPO keeps
at least half of SFT's distinct held-out answers, under 300 s on two cores (the two-thread runs, each alone on the
machine; a one-thread run shares the cores with another one, so its time is shown, not held to the limit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WALL_LIMIT_S = 300.0


def run_one(seed: int, threads: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"seed{seed}-threads{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "medgspo.cli", "-q", "pipeline", "--run_dir", str(run_dir), "--seed", str(seed)]
    log = (out / f"seed{seed}-threads{threads}.log").open("w")
    code = subprocess.call([*cmd, *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        return {"seed": seed, "threads": threads, "error": f"exit {code}, see {log.name}"}
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {"seed": seed, "threads": threads, **row(summary)}


def row(summary: dict) -> dict:
    """The figures of one run that the claims are about."""
    models, paired = summary["models"], summary["paired"]["seen"]
    return {
        "paired": paired,
        "sft_seen": (models["sft"]["seen"]["mean_score"], *models["sft"]["seen"]["ci"]),
        "gspo_seen": (models["gspo"]["seen"]["mean_score"], *models["gspo"]["seen"]["ci"]),
        "distinct": (models["sft"]["heldout"]["distinct_answers"], models["gspo"]["heldout"]["distinct_answers"]),
        "wall_s": summary["wall_s"],
    }


def holds(r: dict) -> bool:
    """The three claims; the time limit is for two cores (a one-thread run here shares them with another run)."""
    if "error" in r or r["paired"] is None:
        return False
    sft, gspo = r["distinct"]
    in_time = r["threads"] < 2 or r["wall_s"] < WALL_LIMIT_S
    return r["paired"]["ci"][0] > 0 and gspo >= 0.5 * sft and in_time


def fmt(mean_low_high) -> str:
    mean, low, high = mean_low_high
    return "n/a" if mean is None else f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="runs/pipeline-seeds", help="folder for the runs (default %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = []
    single = [(s, 1) for s in args.seeds if 1 in args.threads]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one core each
        results += list(pool.map(lambda job: run_one(*job, out, extra), single))
    for threads in (t for t in args.threads if t != 1):
        results += [run_one(seed, threads, out, extra) for seed in args.seeds]

    print(
        "| seed | threads | paired GSPO - SFT, seen | SFT, seen | GSPO, seen | distinct held-out SFT -> GSPO | wall |"
    )
    print("|---:|---:|---|---|---|---|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['seed']} | {r['threads']} | {r['error']} | | | | |")
            continue
        p = r["paired"]
        paired = "n/a" if p is None else f"{p['mean']:+.2f} [{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}] (n={p['n']})"
        sft, gspo = r["distinct"]
        print(
            f"| {r['seed']} | {r['threads']} | {paired} | {fmt(r['sft_seen'])} | {fmt(r['gspo_seen'])} | "
            f"{sft:.0%} -> {gspo:.0%} | {r['wall_s']:.0f} s |"
        )
    kept = sum(holds(r) for r in results)
    print(
        f"\nClaims kept (paired interval > 0, >= half the distinct answers, < {WALL_LIMIT_S:.0f} s with two threads): {kept} of {len(results)}"
    )
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0 if kept == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
