"""``medgspo plan``: what a recipe will do before it runs, as text: batch arithmetic, judge calls and cost,
clipping, memory, what the LoRA adapts per layer kind, and token budgets counted with a real tokenizer (the
arithmetic lives in :mod:`medgspo.train.batching` and :mod:`medgspo.plan.estimates`).

    medgspo plan --config recipes/qwen3.5-4b-medical/gspo.yaml
    medgspo plan --config recipes/qwen3.5-4b-medical/gspo-paper.yaml --num_processes 4
    medgspo plan --config recipes/qwen3.5-4b-medical/sft.yaml --num_processes 8

Nothing is trained and no judge is called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.errors import ConfigError
from medgspo.judge.deepseek import is_deepseek_host, is_deepseek_model
from medgspo.judge.pricing import LIST_PRICES, PRICES_READ_ON, list_prices
from medgspo.plan.estimates import (
    DTYPE_BYTES,
    JudgeCostPlan,
    ModelPlan,
    TokenBudget,
    judge_cost_plan,
    memory_plan,
    model_plan,
    plan_tokenizer,
    token_budget,
)
from medgspo.rewards import check_rewards
from medgspo.train.batching import (
    BatchPlan,
    batch_plan,
    clipping_can_act,
    clipping_notes,
    judge_concurrency_per_process,
)

logger = logging.getLogger(__name__)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def deepseek_cost_lines(config: Any, cost: JudgeCostPlan) -> list[str]:
    """For a DeepSeek judge, the same judge calls priced at each model DeepSeek lists (Flash and V4-Pro, the
    card's reward model), so the choice of judge is a visible cost."""
    if not (is_deepseek_model(config.model) or is_deepseek_host(config.endpoint)):
        return []
    per_model = []
    for name in LIST_PRICES:
        prices = list_prices(name, config.judge_price_period)
        per_step = prices.cost(cost.prompt_tokens, cost.cached_tokens, cost.output_tokens) * cost.calls_per_step
        per_model.append(f"{name} ${1000 * per_step:,.2f}")
    return [
        f"judge cost by DeepSeek model   {'; '.join(per_model)} per 1,000 optimizer steps "
        f"({config.judge_price_period} list prices, read {PRICES_READ_ON})"
    ]


def gspo_lines(
    training_args: Any,
    judge_config: Any,
    reward_args: Any,
    plan: BatchPlan,
    cost: JudgeCostPlan | None,
    vllm_note: list[str],
) -> list[str]:
    """The GSPO part of the plan as text lines: the batch, the judge, then GSPO's clipping."""
    weights = dict(
        zip(
            reward_args.reward_funcs,
            check_rewards(reward_args.reward_funcs, training_args.reward_weights),
            strict=True,
        )
    )
    lines = batch_lines(plan, judge_config, weights) + judge_lines(plan, judge_config, cost, training_args.max_steps)
    notes = clipping_notes(training_args)
    lines.append(clipping_line(plan, training_args))
    return lines + vllm_note + [f"note: {n}" for n in notes] + [f"problem: {p}" for p in plan.problems()]


def batch_lines(plan: BatchPlan, judge_config: Any, weights: dict[str, float]) -> list[str]:
    """Processes, effective batch, prompts and rollouts per step, judge calls and the rewards' weights."""
    judge_calls = (
        f"judge calls per optimizer step {plan.judge_calls_per_step:g} (backend {judge_config.judge_backend}, "
        f"weight {weights['judge']:g})"
        if "judge" in weights
        else "judge calls per optimizer step 0 (no `judge` in --reward_funcs)"
    )
    return [
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
        judge_calls,
        f"rewards                        {', '.join(f'{n} x {w:g}' for n, w in weights.items())}",
    ]


def judge_lines(plan: BatchPlan, judge_config: Any, cost: JudgeCostPlan | None, max_steps: int | None) -> list[str]:
    """The judge's concurrency per process, its tokens and cost per call, per 1,000 steps and for this run."""
    cap = judge_config.judge_concurrency
    per_process = judge_concurrency_per_process(cap, plan.num_processes, plan.local_rollouts)
    lines = [
        f"judge concurrency              {per_process} per process x {plan.num_processes} = "
        f"{per_process * plan.num_processes} in flight (provider cap --judge_concurrency {cap})"
    ]
    if judge_config.judge_backend == "reference":
        return [*lines, "judge cost                     $0 (the offline reference judge makes no API calls)"]
    if cost is None:
        return lines
    prices = judge_config.prices
    lines += [
        f"judge tokens per call          ~{cost.prompt_tokens:,.0f} prompt (~{cost.cached_tokens:,.0f} of them "
        f"prefix-cache hits) + ~{cost.output_tokens:g} output",
        f"judge cost                     ${cost.cost_per_call:.6f} per call, ${cost.cost_per_1000_steps:,.2f} per "
        f"1,000 optimizer steps (USD per M tokens: in {prices.input_per_mtok:g}, cached "
        f"{prices.cached_input_per_mtok:g}, out {prices.output_per_mtok:g})",
        *deepseek_cost_lines(judge_config, cost),
    ]
    if max_steps and max_steps > 0:
        run_cost = cost.cost_per_call * cost.calls_per_step * max_steps
        lines.append(f"judge cost of this run         ${run_cost:,.2f} for max_steps {max_steps}")
    return lines


def clipping_line(plan: BatchPlan, training_args: Any) -> str:
    """Whether GSPO's clipping can act with this batch arithmetic (it cannot when every update is on-policy)."""
    if not clipping_can_act(plan.gradient_accumulation_steps, plan.steps_per_generation, plan.num_iterations):
        return "clipping can act               NO: every update is on-policy, the sequence ratio is exactly 1"
    return (
        f"clipping can act               yes: {plan.optimizer_steps_per_generation:g} optimizer steps per rollout "
        f"batch, steps after the first are off-policy (clip range 1-{training_args.epsilon:g} .. "
        f"1+{training_args.epsilon_high or training_args.epsilon:g})"
    )


def vllm_lines(training_args: Any, judge_config: Any, num_processes: int) -> list[str]:
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
    if judge_config.judge_backend == "local":
        from urllib.parse import urlparse

        judge = urlparse(judge_config.endpoint)  # the judge's own default URL when none is given
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


def lora_settings(model_args: Any, sft_adapter: str | None) -> tuple[int, int, Any, str]:
    """``(r, alpha, targets, where from)``: the SFT adapter's when GSPO continues one, else the recipe's."""
    if sft_adapter and (Path(sft_adapter) / "adapter_config.json").is_file():
        from medgspo.modeling.adapters import adapted_modules, adapter_config

        config = adapter_config(sft_adapter)
        leaves = sorted({m.rsplit(".", 1)[-1] for m in adapted_modules(sft_adapter)})
        return config.get("r", model_args.lora_r), config.get("lora_alpha", model_args.lora_alpha), leaves, sft_adapter
    return model_args.lora_r, model_args.lora_alpha, model_args.lora_target_modules, "the recipe"


def model_lines(model_args: Any, sft_adapter: str | None = None) -> tuple[list[str], ModelPlan | None]:
    """Parameters, what the LoRA adapts per layer kind and the GPU-kernel note, or one line saying why not."""
    from medgspo.modeling.coverage import coverage_lines
    from medgspo.train.backends import kernel_note
    from medgspo.train.kernels import plan_note

    r, alpha, targets, lora_source = lora_settings(model_args, sft_adapter)
    try:
        model = model_plan(model_args.model_name_or_path, r, alpha, targets)
    except Exception as err:  # noqa: BLE001 - offline hub ids, unknown architectures: the estimate is optional
        return [
            f"memory                         not estimated: the model config could not be read ({err.__class__.__name__})"
        ], None
    lines = [
        f"parameters                     {model.n_params:,} ({model.lora_params:,} LoRA, r={r}, from {lora_source}); "
        f"config from {model.config_source}",
        *coverage_lines(model.coverage),
    ]
    notes = [kernel_note(model.text_config), plan_note(model.text_config)]
    return lines + [f"note: {note}" for note in notes if note], model


def memory_lines(model_args: Any, model: ModelPlan, plan: BatchPlan, seq_len: int) -> list[str]:
    """The per-process memory estimate of a GSPO run."""
    dtype_bytes = DTYPE_BYTES.get(model_args.dtype, 2)
    mem = memory_plan(model.n_params, model.lora_params, model.text_config, dtype_bytes, plan.local_rollouts, seq_len)
    return [
        f"memory per process             weights {_gib(mem.weights)} + LoRA training state {_gib(mem.lora_training)} + "
        f"rollout KV cache {_gib(mem.rollout_kv)} ({plan.local_rollouts} sequences x {seq_len} tokens x "
        f"{mem.kv_per_token:,} B) = {_gib(mem.total)}, plus activations (not estimated: they depend on gradient "
        "checkpointing and sequence length)",
    ]


def budget(model_args: Any, model: ModelPlan | None, records: list[dict], training_args: Any, max_length: int | None):
    """``(TokenBudget, tokenizer label)`` of the records, or ``(None, why not)``."""
    from medgspo.data.chat_format import ChatFormat

    found = plan_tokenizer(model_args.model_name_or_path, model.text_config if model else None)
    if found is None:
        return None, "no tokenizer readable offline"
    tokenizer, label = found
    completion = getattr(training_args, "max_completion_length", None)
    return token_budget(records, tokenizer, ChatFormat(), completion, max_length), label


@dataclass
class PlanArguments:
    """The plan's own flags (next to every field of the recipe it reads)."""

    num_processes: int = field(default=1, metadata={"help": "Training processes (GPUs) to plan for."})
    judge_output_tokens: float = field(default=60.0, metadata={"help": "Tokens of one judge verdict."})
    answer_chars: int | None = field(
        default=None, metadata={"help": "Characters of a candidate answer (default: the records' mean answer)."}
    )


def run_plan(argv: list[str]) -> list[str]:
    """Parse ``argv`` (a recipe plus overrides, and the plan's own flags) and return the plan as lines."""
    from medgspo.data.records import load_records
    from medgspo.utils.cli import make_parser, parse

    # TrainingArguments refuses bf16/fp16 on a machine without a GPU; a plan reads no precision flag, so it can be
    # made for a GPU recipe anywhere (the memory estimate uses the model's `dtype`).
    argv = [*argv, "--bf16", "false", "--fp16", "false"]
    if _is_sft_recipe(argv):
        from medgspo.train.sft import SFT_ARGUMENTS

        parser = make_parser((*SFT_ARGUMENTS, PlanArguments), "medgspo plan")
        data_args, _, training_args, model_args, opts = parse(parser, argv)
        _check(opts)
        records, source = _records_for_estimate(data_args, load_records)
        return sft_lines(training_args, model_args, opts.num_processes, records, source)
    from medgspo.train.gspo import GSPO_ARGUMENTS

    parser = make_parser((*GSPO_ARGUMENTS, PlanArguments), "medgspo plan")
    data_args, _, judge_config, reward_args, training_args, model_args, opts = parse(parser, argv)
    _check(opts)
    plan = batch_plan(training_args, opts.num_processes)
    records, source = _records_for_estimate(data_args, load_records)
    answer_chars = opts.answer_chars or round(sum(len(r["Response"]) for r in records) / len(records))
    cost = None
    if judge_config.judge_backend != "reference":
        cost = judge_cost_plan(
            records,
            judge_config.prices,
            plan.num_generations,
            plan.judge_calls_per_step,
            answer_chars,
            opts.judge_output_tokens,
        )
    lines = [f"GSPO plan for {training_args.output_dir} ({model_args.model_name_or_path})", ""]
    vllm = vllm_lines(training_args, judge_config, opts.num_processes)
    lines += gspo_lines(training_args, judge_config, reward_args, plan, cost, vllm)
    more, model = model_lines(model_args, training_args.sft_adapter)
    tokens, label = budget(model_args, model, records, training_args, None)
    seq_len, seq_note = model_args.max_seq_length, "max_seq_length"
    if tokens is not None:
        seq_len = tokens.prompt.max + training_args.max_completion_length
        seq_note = "the longest prompt + max_completion_length"
    lines += more + (memory_lines(model_args, model, plan, seq_len) if model else [])
    lines += gspo_token_lines(tokens, label, training_args.max_completion_length)
    lines.append(
        f"assumptions                    judge prompts from {source}; candidate answers of {answer_chars} characters; "
        f"{opts.judge_output_tokens:g} output tokens per verdict; KV cache at {seq_len:,} tokens ({seq_note}); "
        f"token counts over the same records"
    )
    return lines


def gspo_token_lines(tokens: TokenBudget | None, label: str, max_completion: int) -> list[str]:
    """Prompt and completion budgets of a GSPO recipe, counted with a real tokenizer."""
    if tokens is None:
        return [f"token budgets                  not computed: {label}"]
    p, c = tokens.prompt, tokens.completion
    return [
        f"prompt tokens                  mean {p.mean:g}, p95 {p.p95:g}, max {p.max:,} ({label}, {p.n} records)",
        f"completion budget              max_completion_length {max_completion:,}: the records' own reasoning + "
        f"answer take mean {c.mean:g}, p95 {c.p95:g}, max {c.max:,} tokens; {tokens.completions_over} of {c.n} "
        f"longer than the budget; a rollout sequence is at most {p.max + max_completion:,} tokens",
    ]


def _check(opts: PlanArguments) -> None:
    if opts.num_processes < 1:
        raise ConfigError(f"--num_processes must be >= 1, got {opts.num_processes}")


def sft_lines(args: Any, model_args: Any, num_processes: int, records: list[dict], source: str) -> list[str]:
    """The plan of an SFT recipe: batch arithmetic, token budget per step (counted), what the LoRA adapts."""
    effective = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    lines = [
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
    more, model = model_lines(model_args)
    lines += more
    tokens, label = budget(model_args, model, records, args, args.max_length)
    if tokens is None:
        return [*lines, f"token budgets                  not computed: {label}"]
    e = tokens.example
    return [
        *lines,
        f"tokens per example             mean {e.mean:g}, p95 {e.p95:g}, max {e.max:,} ({label}, chat template "
        f"applied); about {effective * e.mean:,.0f} per optimizer step",
        f"over max_length                {tokens.examples_over} of {e.n} examples longer than {args.max_length} "
        f"tokens (--oversized decides: drop or truncate the reasoning)",
        f"assumptions                    token counts over {source}",
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
