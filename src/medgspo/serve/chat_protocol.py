"""OpenAI's chat-completions wire format for ``medgspo serve`` (pure: no HTTP, no model).

    chat = parse_chat_request(json.loads(body), ServerConfig("medgspo"))     # or APIError(400/404, param=...)
    chat_body(completion_id, model_id, results, describe)                     # a ``chat.completion`` object
    sse(chunk_body(completion_id, model_id, 0, {"content": "……"}))            # one streamed event

The reasoning goes in ``reasoning_content`` and the answer in ``content`` (the DeepSeek / vLLM convention).
``logprobs`` cover every generated token in order, the reasoning's included; ``describe(token_id)`` gives a token's
text and UTF-8 bytes (a Chinese character may span two tokens, so a token's text alone can be U+FFFD).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from medgspo.serve.config import TEMPLATE_KWARGS, ServerConfig, template_kwarg_problem
from medgspo.serve.engine import GenerationResult
from medgspo.serve.protocol import (
    APIError,
    Describe,
    Generation,
    check_body,
    field_value,
    parse_generation,
    top_logprobs_count,
    usage,
)
from medgspo.serve.sampling import TokenLogprob
from medgspo.serve.streaming import split_text

ROLES = ("system", "developer", "user", "assistant")


@dataclass
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    messages: list[dict[str, str]]
    params: Generation
    logprobs: int | None = None  # None: no logprobs; else how many top alternatives per token (``top_logprobs``)
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # ``chat_template_kwargs`` (``enable_thinking``)


def parse_chat_request(body: Any, config: ServerConfig) -> ChatRequest:
    """Validate a request body; ``APIError`` (400/404) names the offending parameter.

    A missing ``model`` means the served one; another name is ``404 model_not_found``. A parameter this server
    does not implement is refused with 400 when it asks for something, never ignored.

    >>> chat = parse_chat_request({"messages": [{"role": "user", "content": "你好"}], "top_k": -1}, ServerConfig("m"))
    >>> chat.messages, chat.params.options.top_k, chat.params.options.max_new_tokens, chat.logprobs
    ([{'role': 'user', 'content': '你好'}], 0, 1024, None)
    """
    body = check_body(body, config)
    params = parse_generation(body, config)
    messages = parse_messages(body.get("messages"))
    kwargs = {**(config.default_chat_template_kwargs or {}), **template_kwargs(body)}
    return ChatRequest(messages, params, _logprobs(body), kwargs)


def _logprobs(body: dict[str, Any]) -> int | None:
    """OpenAI's rule: ``logprobs: true`` asks for them, ``top_logprobs`` (0 to 20) needs it."""
    wanted = field_value(body, "logprobs", bool, False)
    top = body.get("top_logprobs")
    if top is not None and not wanted:
        message = "'top_logprobs' needs 'logprobs': true."
        raise APIError(400, message, param="top_logprobs", code="invalid_value")
    return top_logprobs_count(top or 0, "top_logprobs") if wanted else None


def template_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """The request's ``chat_template_kwargs``: only the keys this server's template honours, with their types.

    >>> template_kwargs({"chat_template_kwargs": {"enable_thinking": False}}), template_kwargs({})
    ({'enable_thinking': False}, {})
    """
    kwargs = field_value(body, "chat_template_kwargs", dict, None) or {}
    for key, value in kwargs.items():
        check_template_kwarg(key, value, f"chat_template_kwargs.{key}")
    return dict(kwargs)


def check_template_kwarg(key: str, value: Any, where: str) -> None:
    """``APIError`` unless ``key`` is a template keyword this server honours and ``value`` has its type."""
    if (problem := template_kwarg_problem(key, value)) is not None:
        code = "unsupported_parameter" if key not in TEMPLATE_KWARGS else "invalid_type"
        raise APIError(400, f"{where} {problem}.", param=where, code=code)


def parse_messages(messages: Any) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` messages from OpenAI's format (string content or a list of text parts).

    >>> parts = [{"type": "text", "text": "问"}]
    >>> parse_messages([{"role": "developer", "content": "简短"}, {"role": "user", "content": parts}])
    [{'role': 'system', 'content': '简短'}, {'role': 'user', 'content': '问'}]
    """
    if messages is None:
        message = "Missing required parameter: 'messages'."
        raise APIError(400, message, param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array.", param="messages", code="invalid_value")
    parsed = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{where} must be an object.", param=where, code="invalid_type")
        role = message.get("role")
        if role not in ROLES:
            text = f"{where}.role must be one of {', '.join(ROLES)} (got {role!r})."
            raise APIError(400, text, param=f"{where}.role", code="invalid_value")
        parsed.append({"role": "system" if role == "developer" else role, "content": _text(message, where)})
    if parsed[-1]["role"] != "user" or not parsed[-1]["content"].strip():
        where = f"messages[{len(parsed) - 1}]"
        raise APIError(400, "The last message must be a non-empty user message.", param=where, code="invalid_value")
    return parsed


def _text(message: dict[str, Any], where: str) -> str:
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
    text = f"{where}.content must be a string or a list of text parts."
    raise APIError(400, text, param=f"{where}.content", code="invalid_type")


# ---- responses --------------------------------------------------------------------------------------------------
def chat_body(
    completion_id: str, model_id: str, results: list[GenerationResult], describe: Describe | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice per result; reasoning in ``reasoning_content``, answer in
    ``content``; ``logprobs`` where the results carry them."""
    choices = []
    for index, result in enumerate(results):
        thinking, answer = split_text(result.text, start_in_thinking=result.opens_thinking)
        message = {"role": "assistant", "content": answer, "reasoning_content": thinking}
        logprobs = logprobs_body(result.logprobs, describe) if result.logprobs is not None and describe else None
        choices.append(
            {"index": index, "message": message, "finish_reason": result.finish_reason, "logprobs": logprobs}
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": choices,
        "usage": usage(results),
    }


def chunk_body(
    completion_id: str,
    model_id: str,
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict:
    """One ``chat.completion.chunk`` of a stream, for choice ``index``."""
    choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model_id,
        "choices": [choice],
    }


def logprobs_body(entries: list[TokenLogprob], describe: Describe) -> dict[str, Any]:
    """OpenAI's chat ``logprobs`` object: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``.

    >>> describe = lambda i: ("ab"[i], [97 + i])
    >>> logprobs_body([TokenLogprob(1, -0.5, ((1, -0.5), (0, -1.0)))], describe)["content"][0]["top_logprobs"][1]
    {'token': 'a', 'logprob': -1.0, 'bytes': [97]}
    """

    def item(token_id: int, logprob: float) -> dict[str, Any]:
        text, raw = describe(token_id)
        return {"token": text, "logprob": logprob, "bytes": raw}

    content = [{**item(e.token_id, e.logprob), "top_logprobs": [item(i, lp) for i, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}
