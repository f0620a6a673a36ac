"""``medgspo plan``: what a recipe will do before it runs: batch arithmetic, judge calls and cost, clipping, memory.

    medgspo plan --config recipes/qwen3.5-4b-medical/gspo.yaml
    medgspo plan --config recipes/qwen3.5-4b-medical/gspo-paper.yaml --num_processes 4
    medgspo plan --config recipes/qwen3.5-4b-medical/sft.yaml --num_processes 8

For a GSPO recipe it prints the effective batch (completions per optimizer step), prompts and rollouts per step,
judge calls per step, the judge's tokens and cost per call and per 1,000 steps from the recipe's prices, whether
GSPO's clipping can act, the judge concurrency each process gets, and, when the model's config can be read, a
memory estimate (weights, LoRA with its Adam state, rollout KV cache). Nothing is trained and no judge is called.

Token counts for the judge are estimates from DeepSeek's published ratio (about 0.6 tokens per Chinese character,
0.3 per other character) over the recipe's own records (or the bundled ones when the dataset is not local); the
judge's reply (a short JSON verdict) is assumed to be ``--judge_output_tokens`` tokens. Within a group of
``num_generations`` completions the prompt up to the candidate answer is identical, so the provider's prefix cache
bills all but the first call of a group at the cache-hit price (DeepSeek caches in 64-token units; ignored here).
All arithmetic lives in small pure functions that the tests check by hand.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
TOKENS_PER_CJK_CHAR = 0.6  # DeepSeek's documented rule of thumb
TOKENS_PER_OTHER_CHAR = 0.3
CANDIDATE_SENTINEL = "\x00CANDIDATE\x00"


# ---- batch arithmetic -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPlan:
    """How TRL's ``GRPOTrainer`` slices rollouts into optimizer steps, for ``num_processes`` processes."""

    num_processes: int
    per_device_batch: int
    gradient_accumulation_steps: int
    steps_per_generation: int
    num_generations: int
    num_iterations: int = 1
    max_completion_length: int = 0

    @property
    def effective_batch(self) -> int:
        """Completions per optimizer step, over all processes."""
        return self.per_device_batch * self.gradient_accumulation_steps * self.num_processes

    @property
    def generation_batch(self) -> int:
        """Completions sampled per rollout round, over all processes (TRL's ``generation_batch_size``)."""
        return self.per_device_batch * self.steps_per_generation * self.num_processes

    @property
    def local_rollouts(self) -> int:
        """Completions one process samples (and judges) per rollout round."""
        return self.per_device_batch * self.steps_per_generation

    @property
    def prompts_per_generation(self) -> float:
        return self.generation_batch / self.num_generations

    @property
    def optimizer_steps_per_generation(self) -> float:
        """Optimizer steps taken on one rollout batch (more than 1: the later ones are off-policy)."""
        return self.steps_per_generation * self.num_iterations / self.gradient_accumulation_steps

    @property
    def judge_calls_per_step(self) -> float:
        """Completions judged per optimizer step (each rollout is judged once, however often it is reused)."""
        return self.generation_batch / self.optimizer_steps_per_generation

    @property
    def prompts_per_step(self) -> float:
        return self.judge_calls_per_step / self.num_generations

    @property
    def rollout_tokens_per_step(self) -> float:
        """Upper bound on generated tokens per optimizer step (every completion at ``max_completion_length``)."""
        return self.judge_calls_per_step * self.max_completion_length

    def problems(self) -> list[str]:
        """Settings TRL would reject, or that leave a rollout batch partly unused."""
        out = []
        if self.num_generations < 2:
            out.append(f"num_generations={self.num_generations}: GRPO/GSPO needs at least 2 completions per prompt.")
        if self.generation_batch % self.num_generations:
            out.append(
                f"generation batch {self.generation_batch} (per_device_train_batch_size {self.per_device_batch} x "
                f"steps_per_generation {self.steps_per_generation} x {self.num_processes} processes) is not "
                f"divisible by num_generations={self.num_generations}; TRL refuses it."
            )
        if (self.steps_per_generation * self.num_iterations) % self.gradient_accumulation_steps:
            out.append(
                f"steps_per_generation x num_iterations = {self.steps_per_generation * self.num_iterations} is not a "
                f"multiple of gradient_accumulation_steps={self.gradient_accumulation_steps}: optimizer steps "
                "straddle rollout batches. Use a multiple."
            )
        return out


def batch_plan(training_args: Any, num_processes: int) -> BatchPlan:
    """The :class:`BatchPlan` of a parsed GSPO config (``steps_per_generation`` defaults to the accumulation)."""
    spg = training_args.steps_per_generation or training_args.gradient_accumulation_steps
    return BatchPlan(
        num_processes=num_processes,
        per_device_batch=training_args.per_device_train_batch_size,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        steps_per_generation=spg,
        num_generations=training_args.num_generations,
        num_iterations=training_args.num_iterations,
        max_completion_length=training_args.max_completion_length or 0,
    )


def judge_concurrency_per_process(provider_cap: int, world_size: int, local_rollouts: int) -> int:
    """Judge calls one process keeps in flight: its share of the provider's cap, and no more than it has rollouts.

    Every process judges its own rollouts at the same moment, so the job as a whole has
    ``world_size x per-process`` calls in flight; this keeps that within ``provider_cap`` (when the cap is at least
    the number of processes).

    >>> judge_concurrency_per_process(32, 1, 8)    # one GPU, 8 rollouts per round: 8 in flight
    8
    >>> judge_concurrency_per_process(32, 4, 64)   # 4 processes share a cap of 32
    8
    >>> judge_concurrency_per_process(2, 4, 64)    # cap below the process count: one call each (a warning says so)
    1
    """
    return max(1, min(local_rollouts, provider_cap // max(1, world_size)))


# ---- judge tokens and cost --------------------------------------------------------------------------------------
def estimate_tokens(text: str) -> float:
    """Provider tokens for ``text`` by DeepSeek's rule of thumb.

    >>> estimate_tokens("发热三天")  # 4 Chinese characters
    2.4
    >>> estimate_tokens("BP 120/80")  # 9 other characters
    2.7
    """
    cjk = len(CJK.findall(text))
    return round(cjk * TOKENS_PER_CJK_CHAR + (len(text) - cjk) * TOKENS_PER_OTHER_CHAR, 6)


@dataclass(frozen=True)
class JudgeCostPlan:
    """Tokens and cost of one judge call and of the judging over 1,000 optimizer steps."""

    prompt_tokens: float  # per call, candidate included
    cached_tokens: float  # per call on average: the shared prefix on all but the first call of a group
    output_tokens: float
    cost_per_call: float
    calls_per_step: float

    @property
    def cost_per_1000_steps(self) -> float:
        return self.cost_per_call * self.calls_per_step * 1000


def judge_prompt_tokens(question: str, reference: str, answer_chars: int) -> tuple[float, float]:
    """``(prompt tokens, prefix tokens)`` of one judge request whose candidate answer has ``answer_chars`` Chinese
    characters; the prefix is everything before the candidate (the same for every completion of a prompt)."""
    from medgspo.judge.prompt import build_messages

    system, user = build_messages(question, reference, CANDIDATE_SENTINEL)
    before, _, after = user["content"].partition(CANDIDATE_SENTINEL)
    prefix = estimate_tokens(system["content"]) + estimate_tokens(before)
    return prefix + answer_chars * TOKENS_PER_CJK_CHAR + estimate_tokens(after), prefix


def judge_cost_plan(
    records: list[dict], prices: Any, num_generations: int, calls_per_step: float, answer_chars: int,
    output_tokens: float, prefix_cache: bool = True,
) -> JudgeCostPlan:  # fmt: skip
    """Mean tokens and cost per judge call over ``records``, and the calls per optimizer step."""
    if not records:
        raise ValueError("no records to estimate judge prompts from")
    sizes = [judge_prompt_tokens(r["Question"], r["Response"], answer_chars) for r in records]
    prompt = sum(p for p, _ in sizes) / len(sizes)
    prefix = sum(q for _, q in sizes) / len(sizes)
    cached = prefix * (num_generations - 1) / num_generations if prefix_cache else 0.0
    cost = prices.cost(prompt, cached, output_tokens)
    return JudgeCostPlan(prompt, cached, output_tokens, cost, calls_per_step)


# ---- memory -----------------------------------------------------------------------------------------------------
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2, None: 2}


@dataclass(frozen=True)
class MemoryPlan:
    """Per-process GPU memory, in bytes, for the parts that can be computed from the model config."""

    weights: int
    lora_params: int
    lora_training: int  # LoRA weights + gradients + Adam moments, fp32
    kv_per_token: int
    rollout_kv: int  # the KV cache of one process's rollout round at full length

    @property
    def total(self) -> int:
        return self.weights + self.lora_training + self.rollout_kv


def kv_bytes_per_token(text_config: Any, dtype_bytes: int) -> int:
    """K and V bytes per token over the full-attention layers (Qwen3.5's linear-attention layers keep a fixed-size
    state instead of a per-token cache)."""
    layer_types = getattr(text_config, "layer_types", None) or ["full_attention"] * text_config.num_hidden_layers
    full = sum(t == "full_attention" for t in layer_types)
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return 2 * full * text_config.num_key_value_heads * head_dim * dtype_bytes


def memory_plan(
    n_params: int, lora_params: int, text_config: Any, dtype_bytes: int, local_rollouts: int, seq_len: int
) -> MemoryPlan:
    """Weights in the training dtype, LoRA at 16 bytes a parameter (fp32 weight, gradient, two Adam moments) and the
    KV cache of a full-length rollout round."""
    kv = kv_bytes_per_token(text_config, dtype_bytes)
    return MemoryPlan(n_params * dtype_bytes, lora_params, lora_params * 16, kv, kv * local_rollouts * seq_len)


def count_parameters(model_path: str, lora_r: int, lora_alpha: int, targets: list[str] | None) -> tuple[int, int, Any]:
    """``(all parameters, LoRA parameters, text config)`` of a model, built on the meta device (no weights read)."""
    import torch
    from huggingface_hub import constants
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    try:  # a plan should not wait on the network: the local cache first, the Hub only if that has nothing
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    except OSError:
        if constants.HF_HUB_OFFLINE:
            raise
        config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=targets))
    lora = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    return n_params, lora, getattr(config, "text_config", config)


# ---- report -----------------------------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def gspo_lines(training_args: Any, judge_args: Any, reward_args: Any, plan: BatchPlan, cost: JudgeCostPlan | None,
               vllm_note: list[str]) -> list[str]:  # fmt: skip
    """The GSPO part of the plan as text lines."""
    from medgspo.train.gspo import clipping_diagnosis

    lines = [
        f"processes                      {plan.num_processes}",
        f"effective batch                {plan.effective_batch} completions per optimizer step "
        f"({plan.per_device_batch} per device x {plan.gradient_accumulation_steps} accumulation x "
        f"{plan.num_processes} processes)",
        f"prompts per optimizer step     {plan.prompts_per_step:g} (x {plan.num_generations} generations)",
        f"rollout batch                  {plan.generation_batch} completions = {plan.prompts_per_generation:g} prompts "
        f"x {plan.num_generations}, {plan.local_rollouts} per process",
        f"optimizer steps per rollout    {plan.optimizer_steps_per_generation:g}",
        f"rollouts per optimizer step    {plan.judge_calls_per_step:g} (at most "
        f"{plan.rollout_tokens_per_step:,.0f} generated tokens)",
        f"judge calls per optimizer step {plan.judge_calls_per_step:g} (backend {judge_args.judge_backend}, "
        f"weight {reward_args.judge_weight:g})",
    ]
    per_process = judge_concurrency_per_process(judge_args.judge_concurrency, plan.num_processes, plan.local_rollouts)
    lines.append(
        f"judge concurrency              {per_process} per process x {plan.num_processes} = "
        f"{per_process * plan.num_processes} in flight (provider cap --judge_concurrency {judge_args.judge_concurrency})"
    )
    if judge_args.judge_backend == "reference":
        lines.append("judge cost                     $0 (the offline reference judge makes no API calls)")
    elif cost is not None:
        lines += [
            f"judge tokens per call          ~{cost.prompt_tokens:,.0f} prompt (~{cost.cached_tokens:,.0f} of them "
            f"prefix-cache hits) + ~{cost.output_tokens:g} output",
            f"judge cost                     ${cost.cost_per_call:.6f} per call, ${cost.cost_per_1000_steps:,.2f} per "
            f"1,000 optimizer steps (prices per M tokens: in {judge_args.judge_price_input_per_mtok}, cached "
            f"{judge_args.judge_price_cached_input_per_mtok}, out {judge_args.judge_price_output_per_mtok})",
        ]
        if training_args.max_steps and training_args.max_steps > 0:
            lines.append(
                f"judge cost of this run         ${cost.cost_per_call * cost.calls_per_step * training_args.max_steps:,.2f}"
                f" for max_steps {training_args.max_steps}"
            )
    notes = clipping_diagnosis(
        training_args.gradient_accumulation_steps, training_args.steps_per_generation, training_args.num_iterations,
        training_args.importance_sampling_level, training_args.loss_type,
    )  # fmt: skip
    lines.append(
        "clipping can act               "
        + (
            "NO: every update is on-policy, the sequence ratio is exactly 1"
            if plan.optimizer_steps_per_generation <= 1  # one optimizer step per rollout batch: pi == pi_old
            else f"yes: {plan.optimizer_steps_per_generation:g} optimizer steps per rollout batch, steps after the "
            f"first are off-policy (clip range 1-{training_args.epsilon:g} .. "
            f"1+{training_args.epsilon_high or training_args.epsilon:g})"
        )
    )
    return lines + vllm_note + [f"note: {n}" for n in notes] + [f"problem: {p}" for p in plan.problems()]


def vllm_lines(training_args: Any, judge_args: Any, num_processes: int) -> list[str]:
    """Where rollouts are generated, and a port clash between a vLLM server and a local judge."""
    if not training_args.use_vllm:
        return ["rollouts                       transformers generate inside each training process"]
    if training_args.vllm_mode == "colocate":
        return [
            f"rollouts                       vLLM colocated: one engine per process, "
            f"{training_args.vllm_gpu_memory_utilization:.0%} of each GPU (sleep mode "
            f"{'on' if training_args.vllm_enable_sleep_mode else 'off'})"
        ]
    host = training_args.vllm_server_base_url or f"{training_args.vllm_server_host}:{training_args.vllm_server_port}"
    lines = [
        f"rollouts                       vLLM server at {host}: {num_processes} training GPUs + "
        f"{training_args.vllm_tensor_parallel_size} for `trl vllm-serve`"
    ]
    if judge_args.judge_backend == "local":
        from urllib.parse import urlparse

        judge = urlparse(judge_args.to_config().endpoint)  # the judge's own default URL when none is given
        same_host = judge.hostname in (training_args.vllm_server_host, "127.0.0.1", "localhost")
        if (
            same_host
            and (judge.port or 80) == training_args.vllm_server_port
            and not training_args.vllm_server_base_url
        ):
            lines.append(
                f"problem: the local judge ({judge.geturl()}) and the vLLM rollout server share port "
                f"{training_args.vllm_server_port}; start one of them on another port."
            )
    return lines


def memory_lines(model_args: Any, plan: BatchPlan, seq_len: int) -> list[str]:
    """The memory estimate, or one line saying why there is none."""
    from medgspo.utils.models import resolve_model_path

    try:
        path = resolve_model_path(model_args.model_name_or_path)
        n_params, lora, text_config = count_parameters(
            path, model_args.lora_r, model_args.lora_alpha, model_args.lora_target_modules
        )
    except Exception as err:  # noqa: BLE001 - offline hub ids, unknown architectures: the estimate is optional
        return [
            f"memory                         not estimated: the model config could not be read ({err.__class__.__name__})"
        ]
    dtype_bytes = DTYPE_BYTES.get(model_args.dtype, 2)
    mem = memory_plan(n_params, lora, text_config, dtype_bytes, plan.local_rollouts, seq_len)
    return [
        f"parameters                     {n_params:,} ({lora:,} LoRA, r={model_args.lora_r})",
        f"memory per process             weights {_gib(mem.weights)} + LoRA training state {_gib(mem.lora_training)} + "
        f"rollout KV cache {_gib(mem.rollout_kv)} ({plan.local_rollouts} sequences x {seq_len} tokens x "
        f"{mem.kv_per_token:,} B) = {_gib(mem.total)}, plus activations (not estimated: they depend on gradient "
        "checkpointing and sequence length)",
    ]


def run_plan(argv: list[str]) -> list[str]:
    """Parse ``argv`` (a recipe plus overrides, and the plan's own flags) and return the plan as lines."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--num_processes", type=int, default=1)
    own.add_argument("--judge_output_tokens", type=float, default=60.0)
    own.add_argument("--answer_chars", type=int, default=None)
    opts, rest = own.parse_known_args(argv)
    if opts.num_processes < 1:
        from medgspo.train.configs import ConfigError

        raise ConfigError(f"--num_processes must be >= 1, got {opts.num_processes}")
    # TrainingArguments refuses bf16/fp16 on a machine without a GPU; a plan reads no precision flag, so it can be
    # made for a GPU recipe anywhere (the memory estimate uses the model's `dtype`).
    rest = [*rest, "--bf16", "false", "--fp16", "false"]
    if _is_sft_recipe(rest):
        return sft_lines(rest, opts.num_processes)
    from medgspo.data.records import load_records
    from medgspo.train.gspo import parse_gspo

    data_args, _, judge_args, reward_args, training_args, model_args = parse_gspo(rest, prog="medgspo plan")
    plan = batch_plan(training_args, opts.num_processes)
    records, source = _records_for_estimate(data_args, load_records)
    answer_chars = opts.answer_chars or round(sum(len(r["Response"]) for r in records) / len(records))
    cost = None
    if judge_args.judge_backend != "reference":
        cost = judge_cost_plan(
            records, judge_args.to_config().prices, plan.num_generations, plan.judge_calls_per_step, answer_chars,
            opts.judge_output_tokens,
        )  # fmt: skip
    seq_len = model_args.max_seq_length
    lines = [f"GSPO plan for {training_args.output_dir} ({model_args.model_name_or_path})", ""]
    lines += gspo_lines(training_args, judge_args, reward_args, plan, cost,
                        vllm_lines(training_args, judge_args, opts.num_processes))  # fmt: skip
    lines += memory_lines(model_args, plan, seq_len)
    lines.append(
        f"assumptions                    judge prompts from {source}; candidate answers of {answer_chars} characters; "
        f"{opts.judge_output_tokens:g} output tokens per verdict; KV cache at {seq_len} tokens (max_seq_length)"
    )
    return lines


def sft_lines(argv: list[str], num_processes: int) -> list[str]:
    """The plan of an SFT recipe: batch arithmetic and token budget per step."""
    from medgspo.train.configs import DataArguments, FormatArguments, MedModelConfig, MedSFTConfig, parse

    _, _, args, model_args = parse(
        (DataArguments, FormatArguments, MedSFTConfig, MedModelConfig), argv, "medgspo plan"
    )
    effective = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    return [
        f"SFT plan for {args.output_dir} ({model_args.model_name_or_path})",
        "",
        f"processes                      {num_processes}",
        f"effective batch                {effective} examples per optimizer step "
        f"({args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulation x "
        f"{num_processes} processes)",
        f"tokens per optimizer step      at most {effective * (args.max_length or 0):,} (max_length {args.max_length})",
        f"LoRA                           r={model_args.lora_r}, alpha={model_args.lora_alpha} on "
        f"{', '.join(model_args.lora_target_modules or [])}; backend {model_args.backend}",
    ]


def _is_sft_recipe(argv: list[str]) -> bool:
    from medgspo.train.backends import recipe_values

    values = recipe_values(argv)
    gspo_keys = {"num_generations", "judge_backend", "importance_sampling_level", "loss_type"}
    return bool(values) and not gspo_keys & values.keys()


def _records_for_estimate(data_args: Any, load_records) -> tuple[list[dict], str]:
    """The recipe's records when they are local, else the bundled ones (a Hub dataset is not downloaded)."""
    name = data_args.dataset_name
    if name is None or Path(name).exists():
        report = load_records(name, skip_invalid=True)
        return report.records, ", ".join(report.sources)
    report = load_records(None)
    return report.records, f"the bundled records (stand-in for {name}, which is not read to make a plan)"
