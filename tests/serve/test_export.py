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
    assert info == {
        "base_model": str(tiny_model_dir),
        "adapter": str(random_adapter),
        "dtype": "float32",
        "merged": {"into": ["model.", "lm_head."], "adapted_modules": ["down_proj", "q_proj", "v_proj"]},
        "copied": {"tensors": {}, "files": ["generation_config.json"]},  # the text model: nothing outside it
    }
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


# ---- the whole base: weights outside the language model, generation and processor files --------------------------
def tensor_bytes(folder: Path) -> dict:
    """Every tensor of the folder's safetensors as (dtype, shape, raw bytes)."""
    from safetensors import safe_open

    from medgspo.publish.base_weights import safetensors_files

    out = {}
    for path in safetensors_files(folder):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = (
                    t.dtype,
                    tuple(t.shape),
                    t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes(),
                )
    return out


@pytest.fixture(scope="module")
def hub_adapter(hub_model_dir, tmp_path_factory) -> Path:
    from hub_miniature import make_adapter
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("hub-adapter")
    make_adapter(AutoModelForCausalLM.from_pretrained(hub_model_dir), out, ["q_proj", "v_proj", "down_proj"])
    return out


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_export_keeps_mtp_and_vision_weights_byte_identical(hub_model_dir, hub_adapter, tmp_path, dtype):
    out = tmp_path / "merged"
    assert run_export(["--adapter", str(hub_adapter), "--output", str(out), "--dtype", dtype]) == 0
    base, merged = tensor_bytes(hub_model_dir), tensor_bytes(out)
    kept = sorted(n for n in base if n.startswith(("mtp.", "model.visual.")))
    assert any(n.startswith("mtp.") for n in kept) and any(n.startswith("model.visual.") for n in kept)
    for name in kept:  # same dtype, shape and bytes, whatever --dtype the language model was cast to
        assert merged[name] == base[name], name
    q = "model.language_model.layers.3.self_attn.q_proj.weight"
    assert merged[q][2] != base[q][2]  # the adapter was merged into the language model
    assert merged[q][0] == (base[q][0] if dtype == "auto" else __import__("torch").bfloat16)

    info = json.loads((out / "medgspo_export.json").read_text(encoding="utf-8"))
    assert info["merged"] == {
        "into": ["model.language_model.", "lm_head."],
        "adapted_modules": ["down_proj", "q_proj", "v_proj"],
    }
    assert info["copied"]["tensors"]["mtp.fc"] == 1 and info["copied"]["tensors"]["mtp.norm"] == 1
    assert sum(info["copied"]["tensors"].values()) == len(kept)
    assert "generation_config.json" in info["copied"]["files"]
    assert (out / "generation_config.json").read_bytes() == (hub_model_dir / "generation_config.json").read_bytes()


def test_merged_folder_with_mtp_still_loads(hub_model_dir, hub_adapter, tmp_path):
    from transformers import AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    out = tmp_path / "merged"
    assert run_export(["--adapter", str(hub_adapter), "--output", str(out)]) == 0
    assert type(Qwen3_5ForConditionalGeneration.from_pretrained(out)).__name__ == "Qwen3_5ForConditionalGeneration"
    assert AutoModelForCausalLM.from_pretrained(out) is not None


def test_kept_tensors_go_into_the_right_shard(tmp_path):
    """A sharded output: a tensor the model saved is replaced in its own shard, a missing one joins the last shard
    and the index."""
    import torch
    from safetensors.torch import save_file

    from medgspo.publish.base_weights import INDEX_FILE, keep_base_weights

    base, out = tmp_path / "base", tmp_path / "out"
    base.mkdir(), out.mkdir()
    save_file(
        {
            "model.visual.w": torch.arange(4, dtype=torch.bfloat16),
            "mtp.w": torch.ones(2),
            "lm_head.weight": torch.zeros(2),
        },
        base / "model.safetensors",
    )
    save_file(
        {"model.visual.w": torch.zeros(4), "lm_head.weight": torch.ones(2)}, out / "model-00001-of-00002.safetensors"
    )
    save_file({"model.language_model.x": torch.ones(3)}, out / "model-00002-of-00002.safetensors")
    weight_map = {
        "model.visual.w": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00001-of-00002.safetensors",
        "model.language_model.x": "model-00002-of-00002.safetensors",
    }
    (out / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    assert keep_base_weights(base, out, ("model.language_model.", "lm_head."), ()) == ["model.visual.w", "mtp.w"]
    index = json.loads((out / INDEX_FILE).read_text())["weight_map"]
    assert index["mtp.w"] == "model-00002-of-00002.safetensors"
    merged = tensor_bytes(out)
    assert merged["model.visual.w"] == tensor_bytes(base)["model.visual.w"]  # bfloat16 again, base values
    assert merged["mtp.w"] == tensor_bytes(base)["mtp.w"]
    assert merged["lm_head.weight"][2] == torch.ones(2).numpy().tobytes()  # the language model is left alone
