"""OpenAI's (legacy) completions wire format, ``POST /v1/completions``, for ``medgspo serve`` (pure: no HTTP).

    request = parse_completion_request(json.loads(body), ServerConfig("medgspo"))   # or APIError(400/404)
    text_body(completion_id, model_id, choices, usage)                               # a ``text_completion`` object

This is the endpoint log-likelihood evaluation needs (lm-eval's ``local-completions``): ``prompt`` is raw text or
token ids (one prompt or a list), no chat template is applied, and ``echo`` with ``logprobs`` returns the
log-probability of every prompt token, so a harness scores answer options by the sum over their tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medgspo.serve.config import ServerConfig
from medgspo.serve.protocol import (
    APIError,
    Describe,
    Generation,
    check_body,
    field_value,
    parse_generation,
    top_logprobs_count,
)
from medgspo.serve.sampling import TokenLogprob

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_LOGPROBS = 20  # vLLM's limit (OpenAI's is 5)

Prompt = str | list[int]


@dataclass
class CompletionRequest:
    """A validated ``POST /v1/completions`` body."""

    prompts: list[Prompt]
    params: Generation
    echo: bool = False
    logprobs: int | None = None  # None: no logprobs; else how many top alternatives per token


def parse_completion_request(body: Any, config: ServerConfig) -> CompletionRequest:
    """Validate a request body; ``APIError`` (400/404) names the offending parameter.

    >>> request = parse_completion_request({"prompt": [[1, 2], [3]], "echo": True, "logprobs": 1}, ServerConfig("m"))
    >>> request.prompts, request.echo, request.logprobs, request.params.options.max_new_tokens
    ([[1, 2], [3]], True, 1, 16)
    """
    body = check_body(body, config)
    params = parse_generation(body, config, DEFAULT_MAX_TOKENS)
    prompts = parse_prompt(body.get("prompt"), config.vocab_size)
    limit = config.max_batch_size + config.max_queue
    if len(prompts) * params.n > limit:
        message = f"One request may ask for at most {limit} completions (prompts x n); got {len(prompts) * params.n}."
        raise APIError(400, message, param="prompt", code="invalid_value")
    logprobs = body.get("logprobs")
    logprobs = top_logprobs_count(logprobs, "logprobs", MAX_LOGPROBS) if logprobs is not None else None
    return CompletionRequest(prompts, params, bool(field_value(body, "echo", bool, False)), logprobs)


def parse_prompt(prompt: Any, vocab_size: int | None) -> list[Prompt]:
    """OpenAI's ``prompt``: a string, a list of strings, a list of token ids, or a list of such lists.

    >>> parse_prompt("问", None), parse_prompt(["a", "b"], None), parse_prompt([5, 6], 10), parse_prompt([[5], [6]], 10)
    (['问'], ['a', 'b'], [[5, 6]], [[5], [6]])
    """
    if prompt is None:
        raise APIError(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(_is_id(t) for t in prompt)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise APIError(400, "'prompt' must be a non-empty string, list of strings or token ids.", param="prompt")
    for index, item in enumerate(prompt):
        where = f"prompt[{index}]"
        if isinstance(item, str):
            if not item:
                raise APIError(400, f"{where} is empty.", param=where, code="invalid_value")
            continue
        if not isinstance(item, list) or not item or not all(_is_id(t) for t in item):
            message = f"{where} must be a non-empty string or list of token ids."
            raise APIError(400, message, param=where, code="invalid_type")
        bad = next((t for t in item if t < 0 or (vocab_size is not None and t >= vocab_size)), None)
        if bad is not None:
            message = f"{where} holds token id {bad}, outside the vocabulary (0 to {(vocab_size or 1) - 1})."
            raise APIError(400, message, param=where, code="invalid_value")
    return prompt


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- responses --------------------------------------------------------------------------------------------------
def legacy_logprobs(
    token_ids: Sequence[int], entries: Sequence[TokenLogprob | None], describe: Describe
) -> dict[str, Any]:
    """The completions ``logprobs`` object, one position per token: ``tokens``, ``token_logprobs``, ``top_logprobs``
    (the top alternatives and the chosen token, as OpenAI returns them) and ``text_offset``. A position without an
    entry (the first prompt token: nothing predicts it) has ``None``.

    >>> describe = lambda i: ("ab"[i], [97 + i])
    >>> legacy_logprobs([0, 1], [None, TokenLogprob(1, -0.7, ((0, -0.6),))], describe)
    {'tokens': ['a', 'b'], 'token_logprobs': [None, -0.7], 'top_logprobs': [None, {'a': -0.6, 'b': -0.7}], 'text_offset': [0, 1]}
    """
    tokens, logprobs, tops, offsets, offset = [], [], [], [], 0
    for token_id, entry in zip(token_ids, entries, strict=True):
        text = describe(token_id)[0]
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        logprobs.append(None if entry is None else entry.logprob)
        if entry is None:
            tops.append(None)
            continue
        top = {describe(i)[0]: lp for i, lp in entry.top}
        top.setdefault(text, entry.logprob)
        tops.append(top)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def text_body(completion_id: str, model_id: str, choices: list[dict[str, Any]], usage: dict | None) -> dict:
    """A ``text_completion`` object (also each streamed chunk, with ``usage`` None)."""
    body = {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": choices,
    }
    return {**body, "usage": usage} if usage is not None else body


def text_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None = None) -> dict[str, Any]:
    """One choice of a ``text_completion``."""
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
