"""Portable adapters: the layout rules by hand, and an adapter of either Qwen3.5 layout loading on either class."""

from __future__ import annotations

import json

import pytest
from hub_miniature import make_adapter

from medgspo.errors import AdapterMismatchError
from medgspo.modeling.adapters import (
    TO_TEXT,
    TO_VISION_LANGUAGE,
    fit_adapter,
    layout_of,
    module_of,
    rename,
    targets_select,
)

TEXT_MODEL = {
    "model",
    "model.layers.0.linear_attn.in_proj_qkv",
    "model.layers.0.linear_attn.out_proj",
    "model.layers.0.mlp.up_proj",
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj",
    "model.layers.1.mlp.up_proj",
    "lm_head",
}
VL_MODEL = {rename(n, TO_VISION_LANGUAGE) for n in TEXT_MODEL} | {"model.visual.blocks.0.attn.qkv"}
UNSLOTH_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def test_names_of_weights_and_layouts():
    assert module_of("base_model.model.model.language_model.layers.1.mlp.up_proj.lora_B.weight") == (
        "model.language_model.layers.1.mlp.up_proj"
    )
    assert (
        module_of("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector") == "model.layers.0.mlp.up_proj"
    )
    assert module_of("base_model.model.model.embed_tokens.weight") is None  # modules_to_save, not a LoRA weight
    assert rename("model.language_model.layers.1.self_attn.q_proj", TO_TEXT) == "model.layers.1.self_attn.q_proj"
    assert rename("model.visual.blocks.0.attn.qkv", TO_VISION_LANGUAGE) == "model.visual.blocks.0.attn.qkv"
    assert rename("model.language_model.layers.0.mlp.up_proj", TO_VISION_LANGUAGE) == (
        "model.language_model.layers.0.mlp.up_proj"  # already vision-language: not nested twice
    )
    assert (layout_of(TEXT_MODEL), layout_of(VL_MODEL)) == ("text", "vision-language")


def test_peft_target_matching_rules():
    assert targets_select(UNSLOTH_REGEX, "model.language_model.layers.1.self_attn.q_proj")
    assert not targets_select(
        UNSLOTH_REGEX, "model.layers.1.self_attn.q_proj"
    )  # why PEFT refuses it on the text class
    assert targets_select(["up_proj"], "model.layers.1.mlp.up_proj") and not targets_select(["proj"], "a.up_proj")
    assert not targets_select(None, "lm_head")


def test_our_adapter_fits_as_saved():
    fit = fit_adapter(
        {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}, TEXT_MODEL, ["q_proj", "v_proj"]
    )
    assert fit.rule is None and not fit.changed and fit.target_modules == ["q_proj", "v_proj"]


def test_unsloth_adapter_on_the_text_class():
    saved = {"model.language_model.layers.1.self_attn.q_proj", "model.language_model.layers.0.mlp.up_proj"}
    saved |= {"model.language_model.layers.1.mlp.up_proj"}
    fit = fit_adapter(saved, TEXT_MODEL, UNSLOTH_REGEX)
    assert fit.rule == TO_TEXT and fit.key_mapping == {r"^model\.language_model\.": "model."}
    assert fit.target_modules == ["q_proj", "up_proj"]  # the last names select exactly the adapted modules
    assert fit.modules == {
        "model.layers.1.self_attn.q_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.1.mlp.up_proj",
    }


def test_text_adapter_on_the_vision_language_class():
    fit = fit_adapter({"model.layers.1.self_attn.q_proj", "lm_head"}, VL_MODEL, ["q_proj", "lm_head"])
    assert fit.rule == TO_VISION_LANGUAGE
    assert fit.modules == {"model.language_model.layers.1.self_attn.q_proj", "lm_head"}


def test_a_partial_layer_selection_keeps_full_names():
    # only layer 0's up_proj: the last name `up_proj` would also select layer 1's, so full names are given to PEFT
    fit = fit_adapter({"model.language_model.layers.0.mlp.up_proj"}, TEXT_MODEL, UNSLOTH_REGEX)
    assert fit.target_modules == ["model.layers.0.mlp.up_proj"]


def test_vision_tower_lora_is_left_out_on_the_text_class_only():
    saved = {"model.language_model.layers.1.self_attn.q_proj", "model.visual.blocks.0.attn.qkv"}
    fit = fit_adapter(saved, TEXT_MODEL, None)
    assert fit.dropped == ["model.visual.blocks.0.attn.qkv"] and fit.modules == {"model.layers.1.self_attn.q_proj"}
    assert fit_adapter(saved, VL_MODEL, None).dropped == []


def test_modules_no_layout_has_are_refused():
    with pytest.raises(AdapterMismatchError, match="no-op"):
        fit_adapter({"model.layers.7.self_attn.q_proj"}, TEXT_MODEL, ["q_proj"])  # no layer 7
    with pytest.raises(AdapterMismatchError):
        fit_adapter({"transformer.h.0.attn.c_attn"}, TEXT_MODEL, ["c_attn"])  # another architecture


# ---- on real (tiny) models -----------------------------------------------------------------------------------------
def test_a_renamed_adapter_loads_and_a_foreign_one_is_refused(tiny_model_dir, tmp_path, capsys):
    """The text model's adapter with vision-language names (as the vision-language class saves it) loads converted
    and gives the same logits; one whose modules exist under no layout is refused, in the library and the CLI."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from medgspo.cli import main
    from medgspo.modeling.loading import load_adapter

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    good = tmp_path / "good"
    reference = make_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), good, ["q_proj", "v_proj"])
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    tensors = load_file(good / "adapter_model.safetensors")
    for name, rule in [("vl", ("model.layers.", "model.language_model.layers.")), ("bad", ("layers.", "blocks."))]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
        save_file({k.replace(*rule): v for k, v in tensors.items()}, tmp_path / name / "adapter_model.safetensors")

    converted = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "vl").eval()
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, expected)
    with pytest.raises(AdapterMismatchError, match="does not fit Qwen3_5ForCausalLM"):
        load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "bad")
    argv = [
        "export",
        "--model",
        str(tiny_model_dir),
        "--adapter",
        str(tmp_path / "bad"),
        "--output",
        str(tmp_path / "m"),
    ]
    assert main(argv) == 2
    assert "does not fit" in capsys.readouterr().err


def test_a_continued_adapter_records_the_base_it_was_loaded_on(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from medgspo.modeling.loading import load_adapter, load_base_model

    adapter = tmp_path / "a"
    make_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter, ["q_proj"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "elsewhere"}))
    continued = load_adapter(load_base_model(str(tiny_model_dir)), adapter, is_trainable=True)
    continued.save_pretrained(tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(tiny_model_dir)
