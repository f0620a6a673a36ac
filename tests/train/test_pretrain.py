"""Stage 0 (tiny model only) on TRL's SFTTrainer: every parameter changes, plain-text loss falls, the folder is a base."""

import json

import pytest
import torch
from safetensors.torch import load_file

from medgspo.errors import ConfigError
from medgspo.pipeline.job import wants_pretraining
from medgspo.train.pretrain import PRETRAIN_ARGUMENTS, pretraining_text, run_pretrain
from medgspo.utils.cli import parse_args


def pretrain_args(tiny_model_dir, output_dir, *extra):
    argv = ["--config", "recipes/tiny/pretrain.yaml", "--model_name_or_path", str(tiny_model_dir)]
    argv += ["--output_dir", str(output_dir), "--max_train_samples", "16", "--logging_steps", "1", *extra]
    return parse_args(PRETRAIN_ARGUMENTS, argv)


def text_loss(model_dir, texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        losses = [model(**(ids := tok(t, return_tensors="pt")), labels=ids["input_ids"]).loss.item() for t in texts]
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_pretraining_trains_every_parameter_and_saves_a_base_model(tiny_model_dir, tmp_path, bundled_records):
    out = tmp_path / "pretrain"
    result = run_pretrain(*pretrain_args(tiny_model_dir, out, "--max_steps", "6"))
    assert result.summary["global_step"] == 6 and result.summary["records"] == 16
    assert result.summary["truncated_too_long"] == 0  # 48 characters of reasoning fit the recipe's 256 tokens
    assert json.loads((out / "pretrain_summary.json").read_text())["global_step"] == 6

    # A full model folder (no adapter) with the tokenizer and the chat template SFT and evaluation need.
    assert not (out / "adapter_config.json").exists()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) == len(before), set(before) - set(changed)  # all parameters, not an adapter

    texts = [pretraining_text(r, 48) for r in bundled_records[:4]]
    assert text_loss(out, texts) < text_loss(tiny_model_dir, texts) - 0.01


def test_pretraining_text_has_no_chat_markup(bundled_records):
    text = pretraining_text(bundled_records[0], 48)
    assert text.startswith(bundled_records[0]["Question"].strip()) and text.endswith(
        bundled_records[0]["Response"].strip()
    )
    assert "<think>" not in text and "</think>" not in text and "<|im_start|>" not in text


def test_the_pipeline_pretrains_only_the_embedded_tiny_model():
    assert wants_pretraining("auto", "tiny") and wants_pretraining("auto", None)
    assert not wants_pretraining("auto", "Qwen/Qwen3.5-4B") and not wants_pretraining("auto", "/models/my-base")
    assert wants_pretraining("yes", "/models/my-base") and not wants_pretraining("no", "tiny")
    with pytest.raises(ConfigError, match="--pretrain must be one of auto, yes, no"):
        wants_pretraining("always", "tiny")
