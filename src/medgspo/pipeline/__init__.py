"""The main job, ``medgspo pipeline``: (tiny: pretraining ->) SFT -> GSPO -> evaluation of base/SFT/GSPO -> report.
:mod:`.job` runs the stages, :mod:`.report` writes ``summary.json`` and ``report.md``, :mod:`.cli` is the command.

    medgspo pipeline                      # tiny Qwen3.5 model, bundled data, offline reference judge, CPU
    medgspo pipeline --judge_backend openai --judge_model deepseek-flash       # DeepSeek as the judge
    medgspo pipeline --sft_config recipes/qwen3.5-4b-medical/sft.yaml \\
                     --gspo_config recipes/qwen3.5-4b-medical/gspo.yaml --run_dir runs/card   # the card, on a GPU
"""

from __future__ import annotations

from medgspo.pipeline.cli import COMMANDS, run_command
from medgspo.pipeline.job import PIPELINE_ARGUMENTS, PipelineArguments, PipelineReport, route_arguments, run_pipeline

__all__ = [
    "COMMANDS",
    "PIPELINE_ARGUMENTS",
    "PipelineArguments",
    "PipelineReport",
    "route_arguments",
    "run_command",
    "run_pipeline",
]
