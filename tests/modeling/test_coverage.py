"""What the card's LoRA touches on the real Qwen3.5-4B, from its bundled config on the meta device, checked by hand."""

from __future__ import annotations

import json

import pytest
import yaml

from medgspo.modeling.coverage import DELTANET_TARGETS, coverage_lines, layer_kind, meta_coverage
from medgspo.modeling.loading import QWEN3_5_4B_TEXT_CONFIG, load_model_config
from medgspo.train.configs import LORA_TARGETS
from medgspo.utils.paths import RECIPES


@pytest.fixture(scope="module")
def config():
    from huggingface_hub import constants

    old, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True  # no network here: the bundled copy is used
    try:
        config, source = load_model_config("Qwen/Qwen3.5-4B")
    finally:
        constants.HF_HUB_OFFLINE = old
    assert "bundled" in source
    return config


def test_the_bundled_config_is_the_issue_s_qwen3_5_4b():
    data = json.loads(QWEN3_5_4B_TEXT_CONFIG.read_text(encoding="utf-8"))
    assert (data["num_hidden_layers"], data["hidden_size"], data["intermediate_size"]) == (32, 2560, 9216)
    assert (data["num_attention_heads"], data["num_key_value_heads"], data["head_dim"]) == (16, 4, 256)
    assert data["vocab_size"] == 248320 and data["tie_word_embeddings"] is True and data["eos_token_id"] == 248044
    full = [i for i, kind in enumerate(data["layer_types"]) if kind == "full_attention"]
    assert full == list(range(3, 32, 4))  # 3 x linear attention, then 1 x full attention, repeated


def test_parameters_by_hand(config):
    n_params, lora, _ = meta_coverage(config, 16, 32, LORA_TARGETS)
    embed = 248320 * 2560  # tied with lm_head: counted once
    full = (
        2560 * 16 * 256 * 2 + 2 * 2560 * 4 * 256 + 16 * 256 * 2560 + 2 * 256
    )  # q (+ output gate), k, v, o, q/k norms
    value_dim, key_dim = 32 * 128, 16 * 128
    conv_dim = 2 * key_dim + value_dim
    linear = 2560 * conv_dim + 2560 * value_dim + 2 * 2560 * 32 + value_dim * 2560  # in_proj_qkv, _z, _b, _a, out_proj
    linear += conv_dim * 4 + 32 + 32 + 128  # depthwise conv (kernel 4), dt_bias, A_log, gated norm
    mlp, norms = 3 * 2560 * 9216, 2 * 2560
    assert n_params == embed + 8 * full + 24 * linear + 32 * (mlp + norms) + 2560 == 4_205_751_296
    # LoRA r=16: r x (in + out) per adapted matrix
    attention = 16 * ((2560 + 8192) + 2 * (2560 + 1024) + (4096 + 2560))  # q, k, v, o of one full-attention layer
    mlp_lora = 16 * 3 * (2560 + 9216)
    assert lora == 8 * attention + 32 * mlp_lora == 21_233_664


def test_the_card_targets_miss_every_deltanet_layer(config):
    _, _, coverage = meta_coverage(config, 16, 32, LORA_TARGETS)
    linear, full, mlp = coverage["linear-attention"], coverage["full-attention"], coverage["MLP"]
    assert (linear.adapted, linear.modules, len(linear.layers)) == (0, 24 * 5, 24)
    assert (full.adapted, full.modules, len(full.layers)) == (32, 32, 8)
    assert (mlp.adapted, mlp.modules, len(mlp.layers)) == (96, 96, 32)
    lines = coverage_lines(coverage)
    assert lines[0].startswith("LoRA on linear-attention       0/120 linear layers in 24 layers (none of")
    assert any("adapt none of the 24 linear-attention layers" in line for line in lines)


def test_the_deltanet_variant_recipe(config):
    folder = RECIPES / "qwen3.5-4b-medical"
    card = yaml.safe_load((folder / "sft.yaml").read_text(encoding="utf-8"))
    variant = yaml.safe_load((folder / "sft-deltanet.yaml").read_text(encoding="utf-8"))
    assert (
        variant["lora_target_modules"]
        == LORA_TARGETS + DELTANET_TARGETS
        == card["lora_target_modules"]
        + [
            "in_proj_qkv",
            "in_proj_z",
            "out_proj",
        ]
    )
    same = {k: v for k, v in variant.items() if k not in ("lora_target_modules", "output_dir")}
    assert same == {k: v for k, v in card.items() if k not in ("lora_target_modules", "output_dir")}  # else the card
    _, lora, coverage = meta_coverage(config, 16, 32, variant["lora_target_modules"])
    assert (coverage["linear-attention"].adapted, coverage["full-attention"].adapted) == (72, 32)
    deltanet = 16 * ((2560 + 8192) + (2560 + 4096) + (4096 + 2560))  # in_proj_qkv, in_proj_z, out_proj per layer
    assert lora == 21_233_664 + 24 * deltanet == 30_474_240


def test_layer_kinds_of_both_layouts():
    assert layer_kind("base_model.model.model.layers.31.self_attn.o_proj") == ("full-attention", 31)
    assert layer_kind("model.language_model.layers.2.linear_attn.out_proj") == ("linear-attention", 2)
    assert layer_kind("model.language_model.layers.2.mlp.down_proj") == ("MLP", 2)
    assert layer_kind("model.visual.blocks.0.attn.qkv") == ("vision", None)
