"""The training commands: ``medgspo pretrain`` (tiny model only), ``medgspo sft`` and ``medgspo gspo``.

    medgspo pretrain --config recipes/tiny/pretrain.yaml
    medgspo sft --config recipes/tiny/sft.yaml --max_steps 5
    medgspo gspo --config recipes/tiny/gspo.yaml --sft_adapter runs/sft

Without ``--config`` the tiny CPU recipes are used. Every field of the recipe dataclasses is a flag. This module
imports TRL: ``medgspo.cli`` imports it only when one of these commands runs.
"""

from __future__ import annotations

import os

from medgspo.train.gspo import GSPO_ARGUMENTS, default_judge_cache
from medgspo.train.gspo import run_gspo as gspo_stage
from medgspo.train.pretrain import PRETRAIN_ARGUMENTS
from medgspo.train.pretrain import run_pretrain as pretrain_stage
from medgspo.train.sft import SFT_ARGUMENTS
from medgspo.train.sft import run_sft as sft_stage
from medgspo.utils.cli import Command
from medgspo.utils.paths import RECIPES

TINY_PRETRAIN_RECIPE = RECIPES / "tiny" / "pretrain.yaml"
TINY_SFT_RECIPE = RECIPES / "tiny" / "sft.yaml"
TINY_GSPO_RECIPE = RECIPES / "tiny" / "gspo.yaml"


def _main_process() -> bool:
    """False in the other processes of a torchrun/accelerate launch (they stay quiet; the main one reports)."""
    return os.environ.get("RANK", "0") == "0"


def release_process_group() -> None:
    """Tear down torch.distributed once a stage is done (torchrun/accelerate launches): a gloo or NCCL group left
    alive at interpreter exit can abort a finished process ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_stage(stage, *args):
    """Run one training stage and release the process group afterwards, also when it fails."""
    try:
        return stage(*args)
    finally:
        release_process_group()


def run_pretrain(*args) -> int:
    result = run_stage(pretrain_stage, *args)
    if _main_process():
        print(f"\nPretrained model: {result.output_dir}")
        print(f"Next: medgspo sft --config recipes/tiny/sft.yaml --model_name_or_path {result.output_dir}")
    return 0


def run_sft(*args) -> int:
    result = run_stage(sft_stage, *args)
    if _main_process():
        print(f"\nSFT adapter: {result.output_dir}")
        print(f"Summary:     {result.output_dir / 'sft_summary.json'}")
    return 0


def run_gspo(*args) -> int:
    _, _, judge_config, _, training_args, _ = args
    default_judge_cache(judge_config, training_args.output_dir)
    result = run_stage(gspo_stage, *args)
    if _main_process():
        print(f"\nGSPO adapter: {result.output_dir}")
        print(f"Metrics:      {result.output_dir / 'metrics.jsonl'}")
        for plot in result.summary["plots"]:
            print(f"Plot:         {plot}")
    return 0


COMMANDS = [
    Command(
        "pretrain",
        PRETRAIN_ARGUMENTS,
        run_pretrain,
        "Stage 0, tiny model only: plain-text pretraining of all parameters.",
        default_config=TINY_PRETRAIN_RECIPE,
    ),
    Command("sft", SFT_ARGUMENTS, run_sft, "Stage 1: LoRA SFT on TRL's SFTTrainer.", default_config=TINY_SFT_RECIPE),
    Command("gspo", GSPO_ARGUMENTS, run_gspo, "Stage 2: GSPO on TRL's GRPOTrainer.", default_config=TINY_GSPO_RECIPE),
]
