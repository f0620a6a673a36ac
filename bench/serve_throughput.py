"""``medgspo serve`` under concurrent users: requests/s and p50/p95 latency at concurrency 1, 4, 16, 64, and what a
maximum-length prompt does to the requests around it, with and without chunked prefill.

    python bench/serve_throughput.py                          # tiny model, 64 tokens per answer, torch's threads
    python bench/serve_throughput.py --threads 1 --unbatched  # also the one-at-a-time server (--max_batch_size 1)
    python bench/serve_throughput.py --model runs/merged --max-tokens 256 --concurrency 1 8 32
    python bench/serve_throughput.py --long-prompt-only       # only the long-prompt table

The server runs in this process on 127.0.0.1 (``BackgroundServer``, a free port) and the clients are aiohttp
requests from this process's event loop, all at once per wave. Every request is greedy with the same
``max_tokens``; the tiny random model never ends an answer early, so every answer has exactly that many tokens
(checked). Each level runs ``--waves`` waves of ``c`` simultaneous requests (concurrency 1: at least 8 requests one
after another); loops are bounded. Printed per level: requests/s, p50/p95 latency, the wave's wall time divided by
one request's time at concurrency 1 (issue 15's goal: 16 concurrent within 3x), and requests/s relative to
concurrency 1 (each table against its own concurrency-1 row).

The long-prompt table: a stream is running; a prompt of the model's whole context (minus one token) arrives on
``/v1/completions``, and right after it a short streamed chat. Measured, the median of ``--repeats`` rounds: the
running stream's longest gap between two tokens, the short request's time to its first token and to its end; once
with the prompt prefilled in one forward pass (``--prefill_chunk`` = the context) and once in chunks of 512 tokens
between decode steps (the default), side by side on the same model in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import torch

from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine
from medgspo.utils.stats import quantile

QUESTION = "第{i}位患者：发热咳嗽三天，最可能的诊断是什么？"


async def wave(url: str, concurrency: int, start: int, max_tokens: int) -> tuple[float, list[float]]:
    """``concurrency`` requests at once: (wall seconds, each request's latency)."""
    import aiohttp

    async def one(session, i: int) -> float:
        body = {
            "messages": [{"role": "user", "content": QUESTION.format(i=i)}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        began = time.perf_counter()
        async with session.post(url, json=body) as response:
            reply = await response.json()
        took = time.perf_counter() - began
        assert response.status == 200, reply
        assert reply["usage"]["completion_tokens"] == max_tokens, reply["usage"]
        return took

    limits = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=limits, timeout=aiohttp.ClientTimeout(total=600)) as session:
        began = time.perf_counter()
        latencies = await asyncio.gather(*(one(session, start + i) for i in range(concurrency)))
        return time.perf_counter() - began, list(latencies)


def measure(engine: ChatEngine, args: argparse.Namespace, max_batch_size: int) -> list[dict]:
    config = ServerConfig(
        "bench", max_tokens_limit=args.max_tokens, max_batch_size=max_batch_size, max_queue=max(args.concurrency)
    )
    rows = []
    with BackgroundServer(create_app(engine, config)) as server:
        url = server.url + "/v1/chat/completions"
        asyncio.run(wave(url, 2, 10_000, args.max_tokens))  # warm-up
        for concurrency in args.concurrency:
            waves = max(args.waves, 8) if concurrency == 1 else args.waves
            walls, latencies = [], []
            for w in range(waves):
                wall, took = asyncio.run(wave(url, concurrency, w * concurrency, args.max_tokens))
                walls.append(wall)
                latencies += took
            rows.append(
                {
                    "concurrency": concurrency,
                    "requests": len(latencies),
                    "wave_s": sum(walls) / len(walls),
                    "rps": len(latencies) / sum(walls),
                    "p50": quantile(latencies, 0.5),
                    "p95": quantile(latencies, 0.95),
                }
            )
    return rows


async def stream_times(session, url: str, body: dict) -> list[float]:
    """The arrival time of every text-bearing event of a streamed completion (``time.perf_counter``)."""
    times = []
    async with session.post(url, json={**body, "stream": True}) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if line.startswith(b"data: {") and b'"text": ""' not in line:
                times.append(time.perf_counter())
    return times


async def long_prompt_round(base: str, context: int, vocab: int, silent: list[int]) -> dict:
    """One round: a running stream, then a maximum-length prompt, then a short streamed request (raw completions,
    so every token is an event; ``silent`` tokens, special ones that decode to no text, are banned)."""
    import aiohttp

    chat = base + "/v1/completions"
    long_ids = [(7 * i) % (vocab - 10) + 5 for i in range(context - 1)]
    message = {"prompt": QUESTION.format(i=0), "temperature": 0, "logit_bias": {str(i): -100 for i in silent}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        running = asyncio.create_task(stream_times(session, chat, {**message, "max_tokens": 96}))
        await asyncio.sleep(0.05)  # the stream is decoding
        long_body = {"prompt": long_ids, "max_tokens": 1, "temperature": 0}
        long = asyncio.create_task(session.post(base + "/v1/completions", json=long_body))
        await asyncio.sleep(0.01)
        sent = time.perf_counter()
        short = await stream_times(session, chat, {**message, "max_tokens": 8})
        (await long).release()
        times = await running
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {"stall": max(gaps), "ttft": short[1] - sent, "total": short[-1] - sent}


def long_prompt_effect(engine: ChatEngine, repeats: int) -> list[tuple[str, dict]]:
    """The long-prompt rounds for one-pass and chunked prefill (medians)."""
    context = engine.model.config.get_text_config().max_position_embeddings
    vocab = int(engine.model.get_output_embeddings().weight.shape[0])
    silent = sorted({*engine.tokenizer.all_special_ids, *engine.tokenizer.get_added_vocab().values()})
    rows = []
    for label, chunk in ((f"one forward pass ({context - 1} tokens)", context), ("chunks of 512 (default)", 512)):
        config = ServerConfig("bench", prefill_chunk=chunk, max_queue=8)
        with BackgroundServer(create_app(engine, config)) as server:
            asyncio.run(long_prompt_round(server.url, context, vocab, silent))  # warm-up
            rounds = [asyncio.run(long_prompt_round(server.url, context, vocab, silent)) for _ in range(repeats)]
        rows.append((label, {key: quantile([r[key] for r in rounds], 0.5) for key in rounds[0]}))
    return rows


def print_long_prompt(rows: list[tuple[str, dict]]) -> None:
    print("\nA maximum-length prompt arrives while a stream runs, then a short streamed request (medians)")
    print(
        "| prefill of the long prompt | running stream's longest token gap s | short request: first token s | "
        "short request: done s |"
    )
    print("|---|---:|---:|---:|")
    for label, r in rows:
        print(f"| {label} | {r['stall']:.3f} | {r['ttft']:.3f} | {r['total']:.3f} |")
    (_, one), (_, chunked) = rows
    print(
        f"chunked vs one pass: longest gap {one['stall'] / chunked['stall']:.1f}x shorter, first token "
        f"{one['ttft'] / chunked['ttft']:.1f}x sooner, short request done {one['total'] / chunked['total']:.1f}x sooner"
    )


def print_table(title: str, rows: list[dict], one_request_s: float, one_rps: float) -> None:
    print(f"\n{title}")
    print(
        "| concurrency | requests | requests/s | p50 latency s | p95 latency s | wave time / one request | "
        "requests/s vs one at a time |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['rps']:.1f} | {r['p50']:.3f} | {r['p95']:.3f} | "
            f"{r['wave_s'] / one_request_s:.2f}x | {r['rps'] / one_rps:.1f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="tiny", help="model folder or `tiny` (default)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default %(default)s)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="levels (default 1 4 16 64)"
    )
    parser.add_argument("--waves", type=int, default=2, help="waves per level (default %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="the server's --max_batch_size (default 16)")
    parser.add_argument("--unbatched", action="store_true", help="also measure --max_batch_size 1 (one at a time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the long-prompt table (default 3)")
    parser.add_argument("--long-prompt-only", action="store_true", help="only the long-prompt table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = ChatEngine.load(args.model)
    where = (
        f"cpu, {torch.get_num_threads()} torch threads" if engine.model.device.type == "cpu" else engine.model.device
    )
    print(f"model {args.model} ({where}); greedy, {args.max_tokens} tokens per answer; server and clients in-process")
    if args.repeats:
        print_long_prompt(long_prompt_effect(engine, args.repeats))
    if args.long_prompt_only:
        return 0
    runs = [(f"--max_batch_size {args.max_batch_size} (continuous batching)", args.max_batch_size)]
    if args.unbatched:
        runs.append(("--max_batch_size 1 (one request at a time, as before issue 15)", 1))
    for title, size in runs:
        rows = measure(engine, args, size)
        one = next((r for r in rows if r["concurrency"] == 1), rows[0])  # each table against its own level 1
        print_table(title, rows, one["wave_s"], one["rps"])
        for r in rows:
            if r["concurrency"] == 16:
                ratio = r["wave_s"] / one["wave_s"]
                print(f"16 concurrent: {r['wave_s']:.3f} s per wave = {ratio:.2f}x one request (goal <= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
