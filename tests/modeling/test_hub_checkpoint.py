"""The card's two stages on a miniature of the ``Qwen/Qwen3.5-4B`` hub checkpoint (vision-language class and layout):
SFT -> GSPO -> eval -> export, and adapters of both layouts (ours, Unsloth's regex over ``language_model``) in
eval, chat, export and GSPO, with merged logits equal to base + adapter."""

from __future__ import annotations

import json
import logging

import pytest
from safetensors import safe_open

from medgspo.cli import main

pytestmark = pytest.mark.slow
UNSLOTH_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
QUESTION = "患者发热三天，咳嗽，最可能的诊断是什么？"


def keys(adapter) -> list[str]:
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        return list(f.keys())


def logits_of(model, tokenizer, chat_format):
    import torch

    ids = tokenizer(chat_format.render_prompt(tokenizer, QUESTION), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.fixture(scope="module")
def runs(hub_model_dir, tmp_path_factory):
    """SFT (2 steps) then GSPO (1 step, reference judge) on the miniature, as a new user would run them."""
    root = tmp_path_factory.mktemp("hub-runs")
    sft = [
        "sft",
        "--model_name_or_path",
        str(hub_model_dir),
        "--output_dir",
        str(root / "sft"),
        "--max_train_samples",
        "4",
        "--eval_size",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "160",
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
    ]
    assert main(sft) == 0
    assert main(gspo_argv(hub_model_dir, root / "sft", root / "gspo")) == 0
    return root


def gspo_argv(model, adapter, out) -> list[str]:
    return [
        "gspo",
        "--model_name_or_path",
        str(model),
        "--sft_adapter",
        str(adapter),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--max_prompts",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--num_generations",
        "4",
        "--max_completion_length",
        "8",
        "--temperature",
        "1.0",
        "--save_strategy",
        "no",
    ]


@pytest.fixture(scope="module")
def unsloth_adapter(hub_model_dir, tmp_path_factory):
    """An adapter saved the Unsloth way: on the vision-language class, regex targets over ``language_model``."""
    from hub_miniature import make_adapter
    from transformers import AutoTokenizer, Qwen3_5ForConditionalGeneration

    from medgspo.data.chat_format import ChatFormat

    out = tmp_path_factory.mktemp("unsloth") / "adapter"
    make_adapter(Qwen3_5ForConditionalGeneration.from_pretrained(hub_model_dir), out, UNSLOTH_REGEX, seed=1)
    AutoTokenizer.from_pretrained(hub_model_dir).save_pretrained(out)
    ChatFormat().save(out)
    return out


def test_the_miniature_is_the_hub_layout(hub_model_dir):
    config = json.loads((hub_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"] and config["model_type"] == "qwen3_5"
    assert config["text_config"]["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    with safe_open(str(hub_model_dir / "model.safetensors"), framework="pt") as f:
        prefixes = {".".join(k.split(".")[:2]) for k in f.keys()}  # noqa: SIM118
    assert prefixes == {"model.language_model", "model.visual", "mtp.fc", "mtp.norm"}


def test_every_stage_loads_the_text_class(hub_model_dir, caplog):
    from transformers import Qwen3_5ForCausalLM

    from medgspo.modeling.loading import load_base_model

    with caplog.at_level(logging.INFO, logger="medgspo.modeling.loading"):
        model = load_base_model(str(hub_model_dir))
    assert type(model) is Qwen3_5ForCausalLM and not hasattr(model.model, "visual")
    assert "loaded as Qwen3_5ForCausalLM (text only: no vision tower, no MTP weights)" in caplog.text
    assert model.name_or_path == str(hub_model_dir.resolve())  # absolute: adapters record a base found anywhere
    import torch
    from transformers import Qwen3_5ForConditionalGeneration

    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():  # the same logits as the hub's own class on text
        expected = Qwen3_5ForConditionalGeneration.from_pretrained(hub_model_dir).eval()(input_ids=ids).logits
        assert torch.equal(model.eval()(input_ids=ids).logits, expected)


def test_sft_then_gspo_chain_on_the_hub_layout(runs, hub_model_dir):
    sft_config = json.loads((runs / "sft" / "adapter_config.json").read_text())
    assert sft_config["base_model_name_or_path"] == str(hub_model_dir.resolve())
    assert all(".model.layers." in k for k in keys(runs / "sft") if "lora_" in k)  # the text layout medgspo trains
    summary = json.loads((runs / "gspo" / "gspo_summary.json").read_text())
    assert summary["global_step"] == 1 and summary["sft_adapter"] == str(runs / "sft")
    assert keys(runs / "gspo") == keys(runs / "sft")  # GSPO continued the SFT adapter
    gspo_config = json.loads((runs / "gspo" / "adapter_config.json").read_text())
    assert gspo_config["base_model_name_or_path"] == str(hub_model_dir.resolve())


def test_eval_and_chat_load_both_layouts(runs, hub_model_dir, unsloth_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import Qwen3_5ForConditionalGeneration

    from medgspo.modeling.generation import SamplingOptions
    from medgspo.modeling.loading import load_for_inference
    from medgspo.serve.engine import ChatEngine

    out = tmp_path / "eval"
    argv = ["eval", "--model", str(hub_model_dir), "--adapter", "none", "--adapter", str(runs / "gspo")]
    argv += ["--adapter", str(unsloth_adapter), "--limit", "2", "--max_new_tokens", "4", "--output_dir", str(out)]
    assert main([*argv, "--no-progress", "--judge_backend", "reference"]) == 0
    assert len(json.loads((out / "eval.json").read_text())) == 3

    lm, tokenizer, chat_format = load_for_inference(str(hub_model_dir), unsloth_adapter, device="cpu")
    vl = Qwen3_5ForConditionalGeneration.from_pretrained(hub_model_dir)
    expected = logits_of(PeftModel.from_pretrained(vl, str(unsloth_adapter)), tokenizer, chat_format)
    assert torch.allclose(logits_of(lm, tokenizer, chat_format), expected, atol=1e-5)  # not a silent no-op
    engine = ChatEngine.load(str(hub_model_dir), str(unsloth_adapter))
    result = engine.generate(engine.question_messages(QUESTION), SamplingOptions(temperature=0, max_new_tokens=4))
    assert result.completion_tokens == 4


@pytest.mark.parametrize("which", ["gspo", "unsloth"])
def test_export_needs_no_model_and_merges_exactly(which, runs, hub_model_dir, unsloth_adapter, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from medgspo.modeling.loading import load_for_inference

    adapter = runs / "gspo" if which == "gspo" else unsloth_adapter
    out = tmp_path / "merged"
    assert main(["export", "--adapter", str(adapter), "--output", str(out)]) == 0  # the base is read from the adapter
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"]  # the base's own class: vision kept
    merged_weights, base_weights = load_file(out / "model.safetensors"), load_file(hub_model_dir / "model.safetensors")
    assert all(torch.equal(merged_weights[k], v) for k, v in base_weights.items() if k.startswith("model.visual."))

    lm, tokenizer, chat_format = load_for_inference(str(hub_model_dir), adapter, device="cpu")
    with_adapter = logits_of(lm, tokenizer, chat_format)
    merged = logits_of(AutoModelForCausalLM.from_pretrained(out), tokenizer, chat_format)
    base = logits_of(AutoModelForCausalLM.from_pretrained(hub_model_dir), tokenizer, chat_format)
    assert torch.allclose(merged, with_adapter, atol=1e-4)
    assert not torch.allclose(base, with_adapter, atol=1e-3)  # the adapter matters


def test_export_for_vllm_writes_the_vision_language_names(runs, hub_model_dir, tmp_path):
    """`--merge false`: the adapter renamed for the base's own class, which plain PEFT (and vLLM) binds."""
    import torch
    from peft import PeftModel
    from transformers import Qwen3_5ForConditionalGeneration

    from medgspo.modeling.loading import load_for_inference

    out = tmp_path / "vllm-lora"
    assert main(["export", "--adapter", str(runs / "gspo"), "--output", str(out), "--merge", "false"]) == 0
    assert all(".model.language_model.layers." in k for k in keys(out) if "lora_" in k)
    config = json.loads((out / "adapter_config.json").read_text())
    assert isinstance(config["target_modules"], list) and "q_proj" in config["target_modules"]
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "chat_format.json", "tokenizer.json"}
    assert not (out / "metrics.jsonl").exists()  # training logs stay behind
    lm, tokenizer, chat_format = load_for_inference(str(hub_model_dir), runs / "gspo", device="cpu")
    vl = PeftModel.from_pretrained(Qwen3_5ForConditionalGeneration.from_pretrained(hub_model_dir), str(out))
    assert torch.allclose(logits_of(vl, tokenizer, chat_format), logits_of(lm, tokenizer, chat_format), atol=1e-5)


def test_gspo_continues_an_unsloth_adapter(hub_model_dir, unsloth_adapter, tmp_path, caplog):
    out = tmp_path / "gspo"
    with caplog.at_level(logging.INFO):
        assert main(gspo_argv(hub_model_dir, unsloth_adapter, out)) == 0
    assert "vision-language layout, loaded on Qwen3_5ForCausalLM (text layout)" in caplog.text
    assert "LoRA on full-attention         4/4 linear layers in 1 layers" in caplog.text  # start-up coverage
    assert "adapt none of the 3 linear-attention layers" in caplog.text  # the card's targets miss DeltaNet
    saved = keys(out)
    assert saved and all(".model.layers." in k for k in saved if "lora_" in k)  # continued, text layout
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"]


def test_export_keeps_the_base_checkpoint_dtype(tiny_model_dir, tmp_path):
    """`--dtype auto` writes the base checkpoint's dtype (bfloat16 for Qwen3.5-4B), not the float32 of the merge."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(adapter)
    assert main(["export", "--adapter", str(adapter), "--output", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "medgspo_export.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto").dtype == torch.bfloat16
