"""``medgspo export``: the merged model gives the logits of base + adapter, and carries tokenizer and chat format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_chat import ANSWER, QUESTION, THINKING, memorized_adapter

from medgspo.cli import main
from medgspo.data.chat_format import ChatFormat
from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.engine import ChatEngine

SYSTEM_PROMPT = "你是一名谨慎的医生。"


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random, non-zero B matrices (so it changes the logits) and a custom chat format."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    out = tmp_path_factory.mktemp("random-adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    ChatFormat(system_prompt=SYSTEM_PROMPT).save(out)
    return out


def run_export(argv: list[str]) -> int:
    return main(["export", *argv])


def logits(model, input_ids):
    import torch

    with torch.no_grad():
        return model(input_ids=input_ids).logits


def test_merged_model_matches_base_plus_adapter(tiny_model_dir, random_adapter, tmp_path, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert run_export(["--model", str(tiny_model_dir), "--adapter", str(random_adapter), "--output", str(out)]) == 0
    assert f"Merged model: {out}" in capsys.readouterr().out

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(ChatFormat().render_prompt(tokenizer, QUESTION), return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_logits = logits(base, ids)
    with_adapter = logits(PeftModel.from_pretrained(base, str(random_adapter)).eval(), ids)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert merged.dtype == torch.float32
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert torch.allclose(logits(merged, ids), with_adapter, atol=1e-4)
    assert not torch.allclose(base_logits, with_adapter, atol=1e-2)  # the adapter matters


def test_output_folder_is_standalone(tiny_model_dir, random_adapter, tmp_path):
    out = tmp_path / "merged"
    assert run_export(["--adapter", str(random_adapter), "--output", str(out)]) == 0  # base read from the adapter
    names = {p.name for p in out.iterdir()}
    expected = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    expected |= {"chat_template.jinja", "chat_format.json", "medgspo_export.json"}
    assert expected <= names
    assert "adapter_config.json" not in names
    assert ChatFormat.load(out).system_prompt == SYSTEM_PROMPT
    info = json.loads((out / "medgspo_export.json").read_text(encoding="utf-8"))
    assert info == {"base_model": str(tiny_model_dir), "adapter": str(random_adapter), "dtype": "float32"}
    engine = ChatEngine.load(str(out))
    assert engine.chat_format.system_prompt == SYSTEM_PROMPT
    assert SYSTEM_PROMPT in engine.render(engine.question_messages(QUESTION))


def test_exported_model_answers_like_the_adapter(tiny_model_dir, tmp_path_factory, tmp_path):
    adapter = memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")
    out = tmp_path / "merged"
    assert run_export(["--adapter", str(adapter), "--output", str(out), "--dtype", "float32"]) == 0
    engine = ChatEngine.load(str(out))  # no adapter: the LoRA weights and the trained norm are merged in
    result = engine.generate(engine.question_messages(QUESTION), SamplingOptions(temperature=0, max_new_tokens=16))
    assert result.text == f"{THINKING}\n</think>\n\n{ANSWER}"


def test_bfloat16_export(tiny_model_dir, random_adapter, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "bf16"
    assert run_export(["--adapter", str(random_adapter), "--output", str(out), "--dtype", "bfloat16"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.bfloat16


def test_user_mistakes_are_one_line_errors(random_adapter, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    cases = [
        (["--adapter", str(tmp_path / "none"), "--output", str(tmp_path / "o")], "adapter folder not found"),
        (["--adapter", str(tmp_path), "--output", str(tmp_path / "o")], "no adapter_config.json"),
        (["--adapter", str(random_adapter), "--output", str(tmp_path / "busy")], "is not empty"),
        (["--adapter", str(random_adapter), "--output", str(random_adapter)], "--output must differ"),
        (
            ["--model", "./missing", "--adapter", str(random_adapter), "--output", str(tmp_path / "o")],
            "model folder not found",
        ),
    ]
    for argv, message in cases:
        assert run_export(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "x"
    assert not (tmp_path / "o").exists()


def test_adapter_whose_recorded_base_is_gone(random_adapter, tmp_path, capsys):
    moved = tmp_path / "adapter"
    moved.mkdir()
    for f in random_adapter.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/gone/model"}))
    assert run_export(["--adapter", str(moved), "--output", str(tmp_path / "o")]) == 2
    assert "model folder not found: /gone/model (recorded in the adapter); pass --model" in capsys.readouterr().err
