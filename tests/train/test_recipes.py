"""Every shipped recipe loads, and the model card's recipe carries the card's settings."""

import pytest

from medgspo.train.configs import LORA_TARGETS
from medgspo.train.sft import SFT_ARGUMENTS
from medgspo.utils.cli import parse_args
from medgspo.utils.paths import RECIPES as RECIPE_DIR

RECIPES = sorted(RECIPE_DIR.glob("*/*.yaml"))


def test_recipes_exist():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert {"tiny/sft.yaml", "qwen3.5-4b-medical/sft.yaml"} <= names


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.name.startswith("sft")], ids=str)
def test_sft_recipe_loads_and_documents_its_command(recipe):
    text = recipe.read_text(encoding="utf-8")
    assert text.startswith("#") and f"--config recipes/{recipe.parent.name}/{recipe.name}" in text
    extra = ["--use_cpu", "true", "--bf16", "false"]  # so a GPU recipe parses on a CPU machine too
    data, fmt, train, model = parse_args(SFT_ARGUMENTS, ["--config", str(recipe), *extra])
    assert model.lora_r == 16 and model.lora_alpha == 32 and set(LORA_TARGETS) <= set(model.lora_target_modules)
    assert train.max_length in (2048, 256)  # the card's limit; the tiny CPU recipe truncates reasoning to 256


def test_tiny_pretraining_recipe_loads_and_trains_every_parameter():
    from medgspo.train.pretrain import PRETRAIN_ARGUMENTS

    recipe = RECIPE_DIR / "tiny" / "pretrain.yaml"
    assert "--config recipes/tiny/pretrain.yaml" in recipe.read_text(encoding="utf-8")
    data, text, train, model = parse_args(PRETRAIN_ARGUMENTS, ["--config", str(recipe)])
    assert model.model_name_or_path == "tiny" and not model.use_peft
    assert data.max_train_samples == 64 and text.pretrain_think_chars == 48 and train.max_length == 256


def test_card_recipe_values():
    data, fmt, train, model = parse_args(
        SFT_ARGUMENTS,
        ["--config", str(RECIPE_DIR / "qwen3.5-4b-medical" / "sft.yaml"), "--use_cpu", "true", "--bf16", "false"],
    )
    assert model.model_name_or_path == "Qwen/Qwen3.5-4B"
    assert model.lora_target_modules == LORA_TARGETS and train.max_length == 2048
    assert data.dataset_name == "FreedomIntelligence/medical-o1-reasoning-SFT" and data.dataset_config == "zh"
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps == 8


def test_command_line_overrides_the_recipe():
    _, _, train, model = parse_args(
        SFT_ARGUMENTS, ["--config", str(RECIPE_DIR / "tiny" / "sft.yaml"), "--lora_r", "8", "--max_steps", "3"]
    )
    assert model.lora_r == 8 and train.max_steps == 3


def test_invalid_override_names_the_flag():
    from medgspo.errors import ConfigError
    from medgspo.train.configs import validate_common

    data, _, train, model = parse_args(
        SFT_ARGUMENTS, ["--config", str(RECIPE_DIR / "tiny" / "sft.yaml"), "--oversized", "shrink"]
    )
    with pytest.raises(ConfigError, match="--oversized"):
        validate_common(data, model, train.max_length)


GSPO_RECIPES = [p for p in RECIPES if p.name.startswith("gspo")]


@pytest.mark.parametrize("recipe", GSPO_RECIPES, ids=str)
def test_gspo_recipe_loads(recipe):
    from medgspo.train.gspo import GSPO_ARGUMENTS
    from medgspo.utils.cli import parse_args

    text = recipe.read_text(encoding="utf-8")
    assert text.startswith("#") and f"--config recipes/{recipe.parent.name}/{recipe.name}" in text
    *_, train, model = parse_args(GSPO_ARGUMENTS, ["--config", str(recipe), "--use_cpu", "true", "--bf16", "false"])
    assert train.importance_sampling_level == "sequence"
    assert model.lora_r == 16 and model.lora_alpha == 32 and model.lora_target_modules == LORA_TARGETS


def test_card_gspo_recipe_carries_the_card_table():
    from medgspo.train.batching import clipping_diagnosis
    from medgspo.train.gspo import GSPO_ARGUMENTS
    from medgspo.utils.cli import parse_args

    argv = ["--config", str(RECIPE_DIR / "qwen3.5-4b-medical" / "gspo.yaml"), "--use_cpu", "true", "--bf16", "false"]
    data, fmt, judge, rewards, train, model = parse_args(GSPO_ARGUMENTS, argv)
    assert model.model_name_or_path == "Qwen/Qwen3.5-4B"
    assert (train.per_device_train_batch_size, train.gradient_accumulation_steps, train.num_generations) == (2, 4, 4)
    assert train.loss_type == "dr_grpo" and (train.temperature, train.top_p, train.top_k) == (1.0, 0.95, 20)
    assert judge.judge_backend == "openai" and judge.judge_model == "deepseek-v4-pro"  # the card's reward model
    assert len(clipping_diagnosis(4, train.steps_per_generation, 1, "sequence", "dr_grpo")) == 2


def test_paper_gspo_recipe_lets_clipping_act():
    from medgspo.train.batching import clipping_diagnosis
    from medgspo.train.gspo import GSPO_ARGUMENTS
    from medgspo.utils.cli import parse_args

    argv = [
        "--config",
        str(RECIPE_DIR / "qwen3.5-4b-medical" / "gspo-paper.yaml"),
        "--use_cpu",
        "true",
        "--bf16",
        "false",
    ]
    *_, train, model = parse_args(GSPO_ARGUMENTS, argv)
    assert train.loss_type == "grpo" and (train.epsilon, train.epsilon_high, train.beta) == (3e-4, 4e-4, 0.0)
    assert train.steps_per_generation > train.gradient_accumulation_steps
    notes = clipping_diagnosis(
        train.gradient_accumulation_steps,
        train.steps_per_generation,
        train.num_iterations,
        train.importance_sampling_level,
        train.loss_type,
    )
    assert notes == []
