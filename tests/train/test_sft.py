"""Stage 1 on TRL's SFTTrainer with the tiny model: LoRA weights change, loss on training data falls, resume works."""

import json

import pytest
import torch
from safetensors.torch import load_file

from medgspo.train.sft import SFT_ARGUMENTS, run_sft
from medgspo.utils.cli import parse_args

pytestmark = pytest.mark.slow

FAST = [
    "--max_train_samples",
    "16",
    "--eval_size",
    "4",
    "--max_length",
    "768",
    "--per_device_train_batch_size",
    "4",
    "--learning_rate",
    "5e-3",
    "--save_steps",
    "2",
    "--logging_steps",
    "1",
]


def sft_args(tiny_model_dir, output_dir, *extra):
    argv = ["--config", "recipes/tiny/sft.yaml", "--model_name_or_path", str(tiny_model_dir)]
    argv += ["--output_dir", str(output_dir), *FAST, *extra]
    return parse_args(SFT_ARGUMENTS, argv)


def training_loss(model_dir, adapter, records):
    """Mean assistant-turn loss of ``records`` under base (+ adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgspo.data.chat_format import ChatFormat

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    fmt, losses = ChatFormat(), []
    for rec in records:
        ex = fmt.sft_example(rec)
        prompt = tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False)
        ids = tok(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
        labels = ids.clone()
        labels[:, : len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100
        with torch.no_grad():
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return sum(losses) / len(losses)


def test_sft_trains_lora_and_saves_a_loadable_adapter(tiny_model_dir, tmp_path, bundled_records):
    out = tmp_path / "sft"
    result = run_sft(*sft_args(tiny_model_dir, out, "--max_steps", "6"))
    assert result.summary["global_step"] == 6

    # A PEFT adapter with the model card's LoRA, plus tokenizer and chat format beside it.
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32
    card = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(cfg["target_modules"]) == card | {"in_proj_qkv", "in_proj_z", "out_proj"}  # tiny recipe: + DeltaNet
    assert (out / "chat_format.json").is_file() and (out / "tokenizer_config.json").is_file()
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and all((c / "chat_format.json").is_file() for c in checkpoints)

    # LoRA B matrices start at zero: any non-zero B means training changed the adapter.
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)

    # The trained model's loss on (some of) its own training data fell.
    train_records = [r for r in bundled_records if r not in _held_out(out)][:8]
    before = training_loss(tiny_model_dir, None, train_records)
    after = training_loss(tiny_model_dir, out, train_records)
    assert after < before - 0.01, (before, after)


def _held_out(out):
    return [json.loads(line) for line in (out / "eval_split.jsonl").read_text(encoding="utf-8").splitlines()]


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "sft"
    run_sft(*sft_args(tiny_model_dir, out, "--max_steps", "4"))
    assert (out / "checkpoint-4").is_dir()
    result = run_sft(*sft_args(tiny_model_dir, out, "--max_steps", "6", "--resume", "true"))
    assert result.summary["resumed_from"].endswith("checkpoint-4")
    assert result.summary["global_step"] == 6
