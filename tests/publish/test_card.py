"""``medgspo export`` writes the model card from the run: every figure checked against the file it comes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipeline import SHORT

from medgspo.cli import main
from medgspo.publish.training_args import read_training_args


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A short `medgspo pipeline` run (SFT -> GSPO -> evaluation) on the tiny model."""
    run = tmp_path_factory.mktemp("card-run") / "run"
    assert main(["pipeline", "--model_name_or_path", str(tiny_model_dir), "--run_dir", str(run), *SHORT]) == 0
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card-export") / "med-gspo"
    assert main(["export", "--adapter", str(run_dir / "gspo"), "--output", str(out)]) == 0
    return out


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_card_metadata_parses_as_the_hub_parses_it(exported, run_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.base_model is None  # a local base folder is no Hub id: named in the body, not in the metadata
    assert data.language == ["zh"]  # the bundled records are Chinese
    model_type = load(exported / "config.json")["model_type"]
    assert {"medical", "sft", "gspo", model_type} <= set(data.tags) and model_type.startswith("qwen3_5")
    heldout = load(run_dir / "eval" / "heldout" / "eval.json")["gspo"]
    scores = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert scores[("heldout", "mean_judge_score")] == round(heldout["mean_score"], 4)
    assert scores[("heldout", "format_compliance")] == round(heldout["format_compliance"], 4)
    assert data.to_dict()["model-index"][0]["name"] == "med-gspo"


def test_card_body_figures_come_from_the_run(exported, run_dir):
    text = (exported / "README.md").read_text(encoding="utf-8")
    gspo_adapter = load(run_dir / "gspo" / "adapter_config.json")
    gspo_args = read_training_args(run_dir / "gspo" / "training_args.bin")
    sft_args = read_training_args(run_dir / "sft" / "training_args.bin")
    summary = load(run_dir / "gspo" / "gspo_summary.json")
    assert f"| LoRA rank r | {gspo_adapter['r']} |" in text
    assert f"| completions per prompt G | {gspo_args['num_generations']} |" in text  # 4: SHORT's override
    assert gspo_args["num_generations"] == 4 and gspo_args["max_completion_length"] == 12
    assert f"| max completion length (tokens) | {gspo_args['max_completion_length']} |" in text
    assert f"| importance-sampling level | {gspo_args['importance_sampling_level']} |" in text
    assert f"| max length (tokens) | {sft_args['max_length']} |" in text and sft_args["max_length"] == 512
    assert f"| optimizer steps taken | {summary['global_step']} |" in text
    for name, weight in summary["reward_weights"].items():
        assert f"| {name} | {weight:.4g} |" in text
    assert "Judge calibration: not run for this model" in text  # the run has no calibration.json
    assert "![reward](plots/reward.png)" in text and (exported / "plots" / "reward.png").is_file()
    assert "### heldout questions" in text and "### seen questions" in text
    assert "## Medical use" in text and "vllm serve med-gspo" in text
    assert str(run_dir / "gspo" / "gspo_summary.json") in text  # where the figures come from


def test_card_reads_the_judge_calibration_when_it_was_run(run_dir, tmp_path):
    cal = run_dir / "calibration"
    argv = ["judge", "calibrate", "--judge_backend", "reference", "--output", str(cal)]
    assert main(argv) == 0
    out = tmp_path / "m"
    assert main(["export", "--adapter", str(run_dir / "gspo"), "--output", str(out)]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    figures = load(cal / "calibration.json")
    assert f"| labelled items | {figures['n']} |" in text
    assert f"| accuracy | {figures['accuracy']:.4g} |" in text
    assert "Judge calibration: not run" not in text


def test_missing_sources_are_said_not_invented(random_adapter_dir, tmp_path):
    """An adapter without a run around it: every section says which file it lacks."""
    out = tmp_path / "m"
    assert main(["export", "--adapter", str(random_adapter_dir), "--output", str(out)]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "No SFT record found" in text and "No GSPO record found" in text
    assert "No evaluation in the run" in text and "No plots in the run" in text


@pytest.fixture
def random_adapter_dir(tiny_model_dir, tmp_path) -> Path:
    from hub_miniature import make_adapter
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    make_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out, ["q_proj"])
    return out


def test_license_comes_from_the_base_card(tmp_path):
    from medgspo.publish.card import base_license

    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n", encoding="utf-8")
    assert base_license(str(tmp_path)) == "apache-2.0"
    assert base_license(str(tmp_path / "nowhere")) is None
