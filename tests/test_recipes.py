"""Every shipped recipe loads, and the model card's recipe carries the card's settings."""

from pathlib import Path

import pytest

from medgspo.configs import LORA_TARGETS, DataArguments, FormatArguments, MedModelConfig, MedSFTConfig, parse

RECIPES = sorted(Path("recipes").glob("*/*.yaml"))
SFT_TYPES = (DataArguments, FormatArguments, MedSFTConfig, MedModelConfig)


def test_recipes_exist():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert {"tiny/sft.yaml", "qwen3.5-4b-medical/sft.yaml"} <= names


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.name.startswith("sft")], ids=str)
def test_sft_recipe_loads_and_documents_its_command(recipe):
    text = recipe.read_text(encoding="utf-8")
    assert text.startswith("#") and f"--config {recipe}" in text
    extra = ["--use_cpu", "true", "--bf16", "false"]  # so a GPU recipe parses on a CPU machine too
    data, fmt, train, model = parse(SFT_TYPES, ["--config", str(recipe), *extra])
    assert model.lora_r == 16 and model.lora_alpha == 32 and model.lora_target_modules == LORA_TARGETS
    assert train.max_length == 2048


def test_card_recipe_values():
    data, fmt, train, model = parse(
        SFT_TYPES, ["--config", "recipes/qwen3.5-4b-medical/sft.yaml", "--use_cpu", "true", "--bf16", "false"]
    )
    assert model.model_name_or_path == "Qwen/Qwen3.5-4B"
    assert data.dataset_name == "FreedomIntelligence/medical-o1-reasoning-SFT" and data.dataset_config == "zh"
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps == 8


def test_command_line_overrides_the_recipe():
    _, _, train, model = parse(SFT_TYPES, ["--config", "recipes/tiny/sft.yaml", "--lora_r", "8", "--max_steps", "3"])
    assert model.lora_r == 8 and train.max_steps == 3


def test_invalid_override_names_the_flag():
    from medgspo.configs import ConfigError, validate_common

    data, _, train, model = parse(SFT_TYPES, ["--config", "recipes/tiny/sft.yaml", "--oversized", "shrink"])
    with pytest.raises(ConfigError, match="--oversized"):
        validate_common(data, model, train.max_length)
