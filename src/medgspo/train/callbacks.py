"""Trainer callbacks shared by SFT and GSPO: the chat files in every checkpoint, and ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat


def save_chat_files(folder: Path, chat_format: ChatFormat, tokenizer: Any) -> None:
    """What an adapter folder needs besides the weights to be used alone: ``chat_format.json`` and the tokenizer."""
    chat_format.save(folder)
    tokenizer.save_pretrained(folder)


def make_format_callback(chat_format: ChatFormat, tokenizer: Any):
    """A callback that saves the chat format and tokenizer into every checkpoint folder."""
    from transformers import TrainerCallback

    class SaveFormatCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():  # one writer under accelerate/DeepSpeed
                save_chat_files(ckpt, chat_format, tokenizer)

    return SaveFormatCallback()


def make_metrics_callback(path: Path, judge_reward, smoothing: float = 0.9):
    """A callback that appends every log entry (plus smoothed reward and run-level judge totals) to ``path``."""
    from transformers import TrainerCallback

    class MetricsJsonlCallback(TrainerCallback):
        def __init__(self):
            self.ema = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "train_runtime" in logs or not state.is_world_process_zero:  # one line per step, one writer
                return
            row = {"step": state.global_step, **logs}
            if "reward" in logs:  # rollout steps; the other minibatches of a rollout batch log loss and clipping
                reward = logs["reward"]
                self.ema = reward if self.ema is None else smoothing * self.ema + (1 - smoothing) * reward
                row["reward_smoothed"] = self.ema
            if judge_reward is not None:
                stats, prices = judge_reward.stats, judge_reward.judge.config.prices
                row |= {
                    "judge_total/calls": stats.calls,
                    "judge_total/cache_hits": stats.cache_hits,
                    "judge_total/failures": stats.failures,
                    "judge_total/cost_usd": stats.cost(prices),
                }
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return MetricsJsonlCallback()
