"""GSPO overhead: medgspo's stage vs a bare TRL ``GRPOTrainer`` script, same model, data, rewards and settings.

    python bench/gspo_overhead.py [--steps 4] [--repeats 2]

Both sides load the tiny model with the same SFT-free LoRA, build the same prompts and the same reward functions
(the reference judge + format + guards, same weights), train ``--steps`` GSPO steps with the tiny recipe's
settings, and save the adapter. medgspo's side is ``run_gspo`` (start-up checks, judge cache, metrics JSONL, plots,
summary). The two alternate ``--repeats`` times in one run; the script prints each wall time (time.perf_counter)
and the ratio of the medians (target <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from medgspo.rewards import check_rewards, get_reward_funcs
from medgspo.train.gspo import GSPO_ARGUMENTS, run_gspo
from medgspo.utils.cli import parse_args

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "gspo.yaml"


def args_for(output_dir: str, steps: int) -> list[str]:
    return [
        "--config",
        str(RECIPE),
        "--output_dir",
        output_dir,
        "--max_steps",
        str(steps),
        "--save_steps",
        "1000",
        "--max_prompts",
        "32",
        "--disable_tqdm",
        "true",
    ]


def bare_trl(steps: int) -> float:
    """The same run written directly against TRL: load, build GRPOTrainer, train, save."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer, get_peft_config

    from medgspo.data.chat_format import ChatFormat
    from medgspo.data.records import load_records, train_eval_split
    from medgspo.modeling.tiny_model import resolve_model_path

    with tempfile.TemporaryDirectory() as out:
        data, fmt_args, judge, rewards, train_args, model_args = parse_args(GSPO_ARGUMENTS, args_for(out, steps))
        start = time.perf_counter()
        path = resolve_model_path(model_args.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
        train, _ = train_eval_split(load_records().records, data.eval_size, data.split_seed)
        fmt = ChatFormat()
        ds = Dataset.from_list([fmt.rl_example(r) for r in train[: train_args.max_prompts]])
        train_args.reward_weights = check_rewards(rewards.reward_funcs, train_args.reward_weights)
        funcs = get_reward_funcs(rewards, judge)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=train_args,
            train_dataset=ds,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
        )
        trainer.train()
        trainer.save_model(out)
        return time.perf_counter() - start


def medgspo_stage(steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        parsed = parse_args(GSPO_ARGUMENTS, args_for(out, steps))
        start = time.perf_counter()
        run_gspo(*parsed)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    medgspo_stage(1)  # warm-up: builds the tiny model if needed, fills OS caches
    bare, ours = [], []
    for i in range(args.repeats):
        bare.append(bare_trl(args.steps))
        ours.append(medgspo_stage(args.steps))
        print(f"repeat {i + 1}: bare TRL {bare[-1]:.2f} s, medgspo {ours[-1]:.2f} s")
    ratio = statistics.median(ours) / statistics.median(bare)
    print(
        f"\n{args.steps} GSPO steps, median of {args.repeats}: bare TRL {statistics.median(bare):.2f} s, "
        f"medgspo {statistics.median(ours):.2f} s, ratio {ratio:.3f} (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
