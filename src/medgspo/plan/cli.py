"""The ``medgspo plan`` command: print what a recipe will do (:mod:`medgspo.plan.report`); nothing is trained.

medgspo plan --config recipes/qwen3.5-4b-medical/gspo.yaml --num_processes 4
"""

from __future__ import annotations

from medgspo.plan.report import PlanArguments
from medgspo.plan.report import run_plan as plan_lines
from medgspo.train.gspo import GSPO_ARGUMENTS
from medgspo.utils.cli import Command, with_default_config
from medgspo.utils.paths import RECIPES

TINY_GSPO_RECIPE = RECIPES / "tiny" / "gspo.yaml"


def run_plan(argv: list[str]) -> int:
    print("\n".join(plan_lines(with_default_config(argv, TINY_GSPO_RECIPE))))
    return 0


COMMANDS = [
    Command(
        "plan",
        (*GSPO_ARGUMENTS, PlanArguments),
        run_plan,
        "Print what a recipe will do (nothing is trained).",
        own_parsing=True,
    ),
]
