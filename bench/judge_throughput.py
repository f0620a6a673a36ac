"""Judge throughput: N judgments at concurrency N vs one at a time, against a local OpenAI-compatible server that
answers after ~300 ms (the fake server of the tests, in its own process so it does not share our GIL).

    python bench/judge_throughput.py            # 64 judgments, 0.3 s latency
    python bench/judge_throughput.py --n 128 --latency 0.5

Prints the wall times, the concurrent batch's ratio to one call's latency (the physical limit is ~1.0x; the
target is <= 1.3x), and what a fully cached rerun costs. The judge is named ``deepseek-flash`` (the fake server
answers any name) so costs use its list price (peak, read 2026-11-29); token counts come from the fake server
(about two characters per token), so the dollar figures only illustrate the accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_openai_server import serve_in_process  # noqa: E402

from medgspo.judge import JudgeConfig  # noqa: E402
from medgspo.judge.api.client import OpenAIJudge  # noqa: E402

_BATCHES = 9  # concurrent batches timed
QUESTION = "患者男，25岁，转移性右下腹痛12小时，麦氏点压痛、反跳痛，白细胞升高。最可能的诊断是什么？"
REFERENCE = "最可能的诊断是急性阑尾炎，应尽早行阑尾切除术，术前予抗生素预防感染。"


def items(n: int, tag: str) -> list[dict[str, str]]:
    """``n`` distinct answers (no de-duplication, no cache hits across tags)."""
    return [
        {"question": QUESTION, "reference": REFERENCE, "answer": f"考虑急性阑尾炎（{tag}-{i}），建议手术。"}
        for i in range(n)
    ]


def judge(base_url: str, concurrency: int, cache: str | None = None) -> OpenAIJudge:
    config = JudgeConfig(
        judge_backend="openai",
        judge_base_url=base_url,
        judge_model="deepseek-flash",
        judge_concurrency=concurrency,
        judge_cache=cache,
    )
    return OpenAIJudge(config, api_key="bench-key")


async def timed(j: OpenAIJudge, batch: list[dict[str, str]]) -> float:
    start = time.perf_counter()
    results = await j.judge_batch(batch)
    elapsed = time.perf_counter() - start
    assert all(r.score is not None for r in results), [r.error for r in results if r.score is None]
    return elapsed


async def bench(base_url: str, n: int, cache_path: str) -> dict[str, float]:
    single_judge, sequential, concurrent = judge(base_url, 1), judge(base_url, 1), judge(base_url, n, cache_path)
    await timed(single_judge, items(1, "warm-up"))
    await timed(concurrent, items(n, "warm-up"))  # opens the connection pool
    singles = [await timed(single_judge, items(1, f"single{k}")) for k in range(7)]
    latency = statistics.median(singles)
    seq = await timed(sequential, items(n, "sequential"))
    runs = [await timed(concurrent, items(n, f"concurrent{k}")) for k in range(_BATCHES)]
    before = concurrent.last_batch
    rerun = await timed(
        concurrent, items(n, f"concurrent{_BATCHES - 1}")
    )  # the same answers again: all from the cache
    after = concurrent.last_batch
    for j in (single_judge, sequential, concurrent):
        await j.aclose()
    prices = concurrent.config.prices
    return {
        "price_note": concurrent.config.price_note,
        "latency": latency,
        "sequential": seq,
        "concurrent_median": statistics.median(runs),
        "concurrent_best": min(runs),
        "concurrent_worst": max(runs),
        "batch_cost": before.cost(prices),
        "batch_calls": before.calls,
        "rerun": rerun,
        "rerun_calls": after.calls,
        "rerun_hits": after.cache_hits,
        "rerun_cost": after.cost(prices),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="judgments per batch (and the concurrency)")
    parser.add_argument("--latency", type=float, default=0.3, help="server latency per call, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serve_in_process(latency_s=args.latency) as base_url:
        r = asyncio.run(bench(base_url, args.n, str(Path(tmp) / "cache.sqlite")))
    n, lat = args.n, r["latency"]
    print(f"server latency {args.latency:.3f} s; one call end to end (median of 7): {lat:.3f} s")
    print(f"{n} judgments one at a time : {r['sequential']:7.2f} s  ({r['sequential'] / (n * lat):.2f}x {n} calls)")
    print(
        f"{n} judgments concurrency {n}: {r['concurrent_median']:7.3f} s  = {r['concurrent_median'] / lat:.2f}x one "
        f"call (best {r['concurrent_best'] / lat:.2f}x, worst {r['concurrent_worst'] / lat:.2f}x over {_BATCHES} batches; "
        f"physical limit ~1.0x, target <= 1.3x)"
    )
    print(f"speed-up over one at a time: {r['sequential'] / r['concurrent_median']:.1f}x")
    print(f"one batch: {r['batch_calls']} calls, estimated ${r['batch_cost']:.6f} ({r['price_note']})")
    print(
        f"fully cached rerun: {r['rerun']:.4f} s, {r['rerun_calls']} calls, {r['rerun_hits']} cache hits, "
        f"cost ${r['rerun_cost']:.6f}"
    )


if __name__ == "__main__":
    main()
