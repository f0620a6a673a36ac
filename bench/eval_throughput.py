"""Evaluation generation throughput: batched vs one question at a time, side by side in one run.

    python bench/eval_throughput.py                       # tiny model, 32 questions, 64 new tokens, batch 16
    python bench/eval_throughput.py --n 64 --batch-size 32 --threads 1 --model runs/tiny-qwen3.5

Both passes use the same questions, greedy decoding and ``min_new_tokens = max_new_tokens`` (set on the model's
generation config, since greedy ``generate`` passes no extra keywords), so both produce exactly the same number of
tokens. Prints both wall times (``time.perf_counter``), tokens per second, the ratio (target >= 5x) and how many
completions came out identical in the two passes.
"""

from __future__ import annotations

import argparse
import time

import torch

from medgspo.data.records import load_records, train_eval_split
from medgspo.modeling.generation import generate
from medgspo.modeling.loading import load_for_inference


def timed(lm, tokenizer, chat_format, questions: list[str], max_new_tokens: int, batch_size: int):
    start = time.perf_counter()
    gens = generate(lm, tokenizer, chat_format, questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return time.perf_counter() - start, gens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="tiny", help="model folder or `tiny` (default)")
    parser.add_argument("--n", type=int, default=32, help="questions (default %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per answer (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="batched pass batch size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    records = load_records().records
    _, held = train_eval_split(records, 0.1, seed=42)
    questions = [r["Question"] for r in (held + records)[: args.n]]
    if args.threads:
        torch.set_num_threads(args.threads)
    lm, tokenizer, chat_format = load_for_inference(args.model)
    timed(lm, tokenizer, chat_format, questions[: args.batch_size], 2, args.batch_size)  # warm-up
    lm.generation_config.min_new_tokens = args.max_new_tokens

    batched_s, batched = timed(lm, tokenizer, chat_format, questions, args.max_new_tokens, args.batch_size)
    single_s, single = timed(lm, tokenizer, chat_format, questions, args.max_new_tokens, 1)

    tokens = [g.n_tokens for g in batched]
    assert tokens == [g.n_tokens for g in single] == [args.max_new_tokens] * len(questions), "token counts differ"
    total = sum(tokens)
    same = sum(a.text == b.text for a, b in zip(batched, single, strict=True))
    where = f"{lm.device}, {torch.get_num_threads()} threads" if lm.device.type == "cpu" else str(lm.device)
    print(f"model {args.model} ({where}): {len(questions)} questions x {args.max_new_tokens} new tokens, greedy")
    print(f"batched (batch {args.batch_size}): {batched_s:8.2f} s  {total / batched_s:8.1f} tokens/s")
    print(f"one at a time:      {single_s:8.2f} s  {total / single_s:8.1f} tokens/s")
    print(f"speed-up: {single_s / batched_s:.1f}x (target >= 5x); identical completions: {same}/{len(questions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
