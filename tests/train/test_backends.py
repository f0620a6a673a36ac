"""Unsloth and vLLM: clean errors without their packages or a GPU, and the Unsloth wiring (with a stand-in module,
since the real one needs CUDA) trains the same PEFT adapter format as the default back-end."""

import json
import sys
import types

import pytest
from safetensors.torch import load_file

from medgspo.cli import main
from medgspo.errors import ConfigError
from medgspo.train import backends


def cfg(**kw):
    base = {"use_vllm": False, "vllm_mode": "colocate"}
    return types.SimpleNamespace(**(base | kw))


# ---- availability errors --------------------------------------------------------------------------------------------
def test_unknown_backend_is_named():
    with pytest.raises(ConfigError, match="--backend must be one of transformers, unsloth, got 'deepspeed'"):
        backends.check_backend("deepspeed")


def test_unsloth_without_the_package_or_a_gpu_says_which_is_missing(monkeypatch):
    monkeypatch.setattr(backends, "package_available", lambda name: False)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        backends.check_backend("unsloth")
    assert "pip install 'medgspo[unsloth]'" in str(err.value) and "no CUDA GPU" in str(err.value)
    monkeypatch.setattr(backends, "package_available", lambda name: True)
    with pytest.raises(ConfigError) as err:
        backends.check_backend("unsloth")
    assert "pip install" not in str(err.value) and "no CUDA GPU" in str(err.value)
    backends.check_backend("transformers")  # the default needs neither


def test_vllm_errors_before_any_model_is_loaded(monkeypatch):
    backends.check_rollout_engine(cfg())  # use_vllm false: nothing to check
    with pytest.raises(ConfigError, match="--vllm_mode must be one of colocate, server"):
        backends.check_rollout_engine(cfg(use_vllm=True, vllm_mode="remote"))
    with pytest.raises(ConfigError, match="not supported by medgspo"):
        backends.check_rollout_engine(cfg(use_vllm=True), backend="unsloth")
    monkeypatch.setattr(backends, "package_available", lambda name: False)
    with pytest.raises(ConfigError, match=r"needs vLLM, which is not installed: pip install 'medgspo\[vllm\]'"):
        backends.check_rollout_engine(cfg(use_vllm=True, vllm_mode="server"))
    monkeypatch.setattr(backends, "package_available", lambda name: True)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        backends.check_rollout_engine(cfg(use_vllm=True))


def test_cli_stops_cleanly_on_unsloth_and_vllm_without_them(capsys):
    # this machine has neither package nor GPU; both commands stop with one line, no traceback, exit code 2
    assert main(["sft", "--backend", "unsloth", "--max_steps", "1"]) == 2
    assert "error: --backend unsloth is unavailable" in capsys.readouterr().err
    assert (
        main(
            [
                "gspo",
                "--config",
                "recipes/qwen3.5-4b-medical/gspo-vllm-colocate.yaml",
                "--bf16",
                "false",
                "--use_cpu",
                "true",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: --use_vllm true (vllm_mode=colocate) needs vLLM") and "Traceback" not in err


def test_requested_backend_reads_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backend: unsloth\nlora_r: 16\n", encoding="utf-8")
    assert backends.requested_backend(["--config", str(recipe)]) == "unsloth"
    assert backends.requested_backend(["--config", str(recipe), "--backend", "transformers"]) == "transformers"
    assert backends.requested_backend([]) == "transformers"


# ---- the Unsloth wiring, with a stand-in for the CUDA-only package --------------------------------------------------
class FakeFastVisionModel:
    """Records the calls the model card makes and answers with a real model and a real PEFT LoRA."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, model_name, **kwargs):
        """The checkpoint's own class, as FastVisionModel loads it: the vision-language class for the hub layout."""
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        cls.calls.append(("from_pretrained", model_name, kwargs))
        own = getattr(transformers, AutoConfig.from_pretrained(model_name).architectures[0])
        return own.from_pretrained(model_name), AutoTokenizer.from_pretrained(model_name)

    @classmethod
    def get_peft_model(cls, model, **kwargs):
        """A real PEFT LoRA; on a vision-language model the targets become a regex over the language layers, as
        Unsloth's `get_peft_regex` makes them."""
        from peft import LoraConfig, get_peft_model

        cls.calls.append(("get_peft_model", None, kwargs))
        targets = kwargs["target_modules"]
        if any(".language_model." in name for name, _ in model.named_modules()):
            targets = r".*language_model.*\.(" + "|".join(targets) + ")"
        lora = LoraConfig(
            r=kwargs["r"],
            lora_alpha=kwargs["lora_alpha"],
            lora_dropout=kwargs["lora_dropout"],
            target_modules=targets,
            bias=kwargs["bias"],
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)

    @classmethod
    def for_training(cls, model):
        cls.calls.append(("for_training", None, {}))


@pytest.fixture
def fake_unsloth(monkeypatch):
    FakeFastVisionModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastVisionModel=FakeFastVisionModel))
    monkeypatch.setattr(backends, "package_available", lambda name: True)
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    return FakeFastVisionModel


@pytest.mark.slow
def test_unsloth_backend_loads_like_the_card_and_saves_the_same_adapter_format(fake_unsloth, tiny_model_dir, tmp_path):
    from medgspo.train.sft import SFT_ARGUMENTS, run_sft
    from medgspo.utils.cli import parse_args

    def sft(out, *extra):
        argv = [
            "--config",
            "recipes/tiny/sft.yaml",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(out),
            "--max_train_samples",
            "8",
            "--eval_size",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            *extra,
        ]
        return run_sft(*parse_args(SFT_ARGUMENTS, argv))

    unsloth = sft(tmp_path / "unsloth", "--backend", "unsloth")
    name, model, kwargs = fake_unsloth.calls[0]
    assert (name, model) == ("from_pretrained", str(tiny_model_dir))
    assert kwargs["load_in_4bit"] is False and kwargs["max_seq_length"] == 2048  # the model card's call
    _, _, peft_kwargs = fake_unsloth.calls[1]
    assert (peft_kwargs["r"], peft_kwargs["lora_alpha"]) == (16, 32)
    assert peft_kwargs["finetune_vision_layers"] is False and peft_kwargs["finetune_language_layers"] is True
    assert fake_unsloth.calls[2][0] == "for_training"
    assert kwargs["use_gradient_checkpointing"] is False  # the tiny recipe has checkpointing off
    assert unsloth.summary["backend"] == "unsloth"

    default = sft(tmp_path / "default")
    a = json.loads((tmp_path / "unsloth" / "adapter_config.json").read_text())
    b = json.loads((tmp_path / "default" / "adapter_config.json").read_text())
    for key in ("peft_type", "r", "lora_alpha", "target_modules", "task_type"):
        assert (key, a[key]) == (key, b[key]) if key != "target_modules" else set(a[key]) == set(b[key])
    # the LoRA weights match; the tiny recipe's trained embeddings (`lora_modules_to_save`) are a CPU-recipe extra
    weights_a = {
        k: v for k, v in load_file(tmp_path / "unsloth" / "adapter_model.safetensors").items() if "lora_" in k
    }
    weights_b = {
        k: v for k, v in load_file(tmp_path / "default" / "adapter_model.safetensors").items() if "lora_" in k
    }
    assert weights_a.keys() == weights_b.keys() and weights_a
    assert all(weights_a[k].shape == weights_b[k].shape for k in weights_a)
    assert default.summary["backend"] == "transformers"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "unsloth")


@pytest.mark.slow
def test_unsloth_gspo_continues_the_sft_adapter(fake_unsloth, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgspo.data.chat_format import ChatFormat

    sft = tmp_path / "sft"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])).save_pretrained(sft)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(sft)
    ChatFormat().save(sft)
    out = tmp_path / "gspo"
    argv = [
        "gspo",
        "--backend",
        "unsloth",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--sft_adapter",
        str(sft),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--max_prompts",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
        "--max_completion_length",
        "32",
        "--temperature",
        "1.0",
        "--save_strategy",
        "no",
    ]
    assert main(argv) == 0
    names = [name for name, _, _ in fake_unsloth.calls]
    assert names == ["from_pretrained", "for_training"]  # the SFT adapter is loaded trainable, no new LoRA
    assert json.loads((out / "gspo_summary.json").read_text())["backend"] == "unsloth"
    weights = load_file(out / "adapter_model.safetensors")
    assert any(w.abs().sum() > 0 for n, w in weights.items() if "lora_B" in n)  # B started at zero, GSPO moved it


@pytest.mark.slow
def test_unsloth_adapter_on_the_hub_layout_works_in_every_command(fake_unsloth, hub_model_dir, tmp_path):
    """Unsloth trains the vision-language class and saves `model.language_model...` names with regex targets; eval,
    export and the default back-end's GSPO load it (converted), and export needs no --model."""
    import torch
    from transformers import AutoModelForCausalLM

    from medgspo.modeling.loading import load_for_inference

    sft = tmp_path / "sft"
    argv = ["sft", "--backend", "unsloth", "--model_name_or_path", str(hub_model_dir), "--output_dir", str(sft)]
    argv += ["--max_train_samples", "4", "--eval_size", "2", "--per_device_train_batch_size", "2", "--max_steps", "1"]
    assert main([*argv, "--max_length", "160", "--save_strategy", "no"]) == 0
    config = json.loads((sft / "adapter_config.json").read_text())
    assert isinstance(config["target_modules"], str) and "language_model" in config["target_modules"]
    assert all(".language_model.layers." in k for k in load_file(sft / "adapter_model.safetensors"))
    assert config["base_model_name_or_path"] == str(hub_model_dir)

    merged = tmp_path / "merged"
    assert main(["export", "--adapter", str(sft), "--output", str(merged)]) == 0
    lm, tokenizer, _ = load_for_inference(str(hub_model_dir), sft, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(AutoModelForCausalLM.from_pretrained(merged)(ids).logits, lm(ids).logits, atol=1e-4)

    gspo = ["gspo", "--model_name_or_path", str(hub_model_dir), "--sft_adapter", str(sft), "--output_dir"]
    gspo += [str(tmp_path / "gspo"), "--max_steps", "1", "--max_prompts", "4", "--per_device_train_batch_size", "4"]
    gspo += ["--num_generations", "4"]
    assert main([*gspo, "--max_completion_length", "8", "--temperature", "1.0", "--save_strategy", "no"]) == 0


# ---- Qwen3.5's GPU kernels ----------------------------------------------------------------------------------------
def test_gpu_kernel_note_on_cuda_without_the_packages(monkeypatch, tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)  # 2 gated-DeltaNet layers
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    assert backends.kernel_note(config) is None  # CPU: nothing changes
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "package_available", lambda name: name == "fla")
    note = backends.kernel_note(config)
    assert note.startswith("GPU kernels: causal-conv1d not installed, so the 2 gated-DeltaNet layers run on")
    assert "pip install 'medgspo[gpu]'" in note and "1.22 s instead of 0.70 s" in note
    monkeypatch.setattr(backends, "package_available", lambda name: False)
    assert "flash-linear-attention and causal-conv1d not installed" in backends.kernel_note(config)
    monkeypatch.setattr(backends, "package_available", lambda name: True)
    assert backends.kernel_note(config) is None  # both installed
    monkeypatch.setattr(backends, "package_available", lambda name: False)
    config.layer_types = ["full_attention"] * len(config.layer_types)
    assert backends.kernel_note(config) is None  # no gated-DeltaNet layers, nothing to say


def test_sft_and_gspo_start_up_say_what_to_install(monkeypatch, tiny_model_dir, caplog):
    import logging

    from peft import LoraConfig, get_peft_model

    from medgspo.modeling.loading import load_base_model

    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "package_available", lambda name: False)
    model = get_peft_model(load_base_model(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj"]))
    with caplog.at_level(logging.INFO, logger="medgspo.train.backends"):
        backends.log_model_notes(model)
    assert "LoRA on full-attention         2/8 linear layers in 2 layers (q_proj)" in caplog.text
    assert "adapt none of the 2 linear-attention layers" in caplog.text
    assert "pip install 'medgspo[gpu]'" in caplog.text
