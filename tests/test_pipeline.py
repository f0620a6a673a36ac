"""The main job end to end on the tiny model, shortened: SFT -> GSPO -> evaluation -> report."""

import json

import pytest

from medgspo.cli import main
from medgspo.pipeline import route_arguments

SHORT = [
    "--sft.max_steps",
    "2",
    "--sft.max_train_samples",
    "8",
    "--sft.max_length",
    "512",
    "--gspo.max_steps",
    "2",
    "--gspo.max_prompts",
    "8",
    "--gspo.max_completion_length",
    "12",
    "--eval_limit",
    "3",
    "--eval_max_new_tokens",
    "12",
]


def test_flags_are_routed_to_each_stage():
    pipe, sft, gspo = route_arguments(
        [
            "--model_name_or_path",
            "m",
            "--sft.learning_rate=1e-4",
            "--gspo.beta",
            "0.01",
            "--judge_backend",
            "openai",
            "--skip_gspo",
            "--gspo.lora_target_modules",
            "q_proj",
            "v_proj",
        ],
        {"judge_backend"},
    )
    assert pipe == ["--judge_backend", "openai", "--skip_gspo"]
    assert sft == ["--model_name_or_path", "m", "--learning_rate=1e-4"]
    assert gspo == [
        "--model_name_or_path",
        "m",
        "--beta",
        "0.01",
        "--judge_backend",
        "openai",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    ]


@pytest.mark.slow
def test_pipeline_end_to_end(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["pipeline", "--model_name_or_path", str(tiny_model_dir), "--run_dir", str(run_dir), *SHORT]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "before SFT" in out and "after GSPO" in out and str(run_dir / "report.md") in out
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    for section in ("## SFT", "## GSPO", "## Evaluation on the held-out split", "95%", "![reward]"):
        assert section in report, section
    summaries = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert set(summaries) == {"base", "sft", "gspo"} and all(s["n"] == 3 for s in summaries.values())
    assert (run_dir / "gspo" / "plots" / "tier_mix.png").is_file()
