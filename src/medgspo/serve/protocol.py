"""OpenAI's chat-completions wire format for ``medgspo serve`` (pure: no HTTP, no model).

    chat = parse_chat_request(json.loads(body), ServerConfig("medgspo"))   # or APIError(400/404, param=...)
    completion_body(completion_id, model_id, result)                        # a ``chat.completion`` object
    sse(chunk_body(completion_id, model_id, {"content": "……"}))             # one streamed event

The reasoning goes in ``reasoning_content`` and the answer in ``content`` (the DeepSeek / vLLM convention); errors
have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from medgspo.modeling.generation import OptionError, SamplingOptions
from medgspo.serve.engine import GenerationResult
from medgspo.serve.streaming import split_text

logger = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4  # OpenAI's limit on stop strings


@dataclass
class ServerConfig:
    """What one server serves and its limits."""

    model_id: str
    api_key: str | None = None
    max_tokens_limit: int | None = None  # largest max_tokens; None: the model's context (``--max_tokens_limit``)
    max_model_len: int | None = None  # prompt + max_tokens must fit; ``create_app`` fills in the model's context
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 16
    max_queue: int = 64
    vocab_size: int | None = None  # the model's; ``create_app`` fills it in, and top_k must fit it


DEFAULT_MAX_TOKENS = 1024  # a request's budget where neither a limit nor the context is known


class APIError(Exception):
    """An error returned to the client as ``{"error": {...}}`` with an HTTP status.

    >>> APIError(400, "Only n=1 is supported.", param="n").body()["error"]["param"]
    'n'
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers  # extra response headers (``Retry-After`` on 503)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---- requests ---------------------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    messages: list[dict[str, str]]
    options: SamplingOptions
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    max_tokens_given: bool = False  # else the budget is what the context leaves (:func:`fit_context`)
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # ``chat_template_kwargs`` (``enable_thinking``)


def parse_chat_request(body: Any, config: ServerConfig) -> ChatRequest:
    """Validate a request body; ``APIError`` (400/404) names the offending parameter.

    A missing ``model`` means the served one; another name is ``404 model_not_found``. A parameter this server
    does not implement is refused with 400 when it asks for something (:func:`unsupported`), never ignored.

    >>> chat = parse_chat_request({"messages": [{"role": "user", "content": "你好"}], "top_k": -1}, ServerConfig("m"))
    >>> chat.messages, chat.options.top_k, chat.options.max_new_tokens
    ([{'role': 'user', 'content': '你好'}], 0, 1024)
    """
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and model != config.model_id:
        message = f"The model `{model}` does not exist; this server serves `{config.model_id}`."
        raise APIError(404, message, param="model", code="model_not_found")
    if _get(body, "n", int, 1) != 1:
        raise APIError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    if (field := unsupported(body)) is not None:
        message = f"'{field}' is not supported by this server; leave it out (or at its default) to go on."
        raise APIError(400, message, param=field, code="unsupported_parameter")
    options, max_name = _sampling_options(body, config)
    stream = bool(_get(body, "stream", bool, False))
    if body.get("stream_options") is not None and not stream:
        message = "'stream_options' is only allowed when 'stream' is true."
        raise APIError(400, message, param="stream_options", code="invalid_value")
    stream_options = _get(body, "stream_options", dict, {})
    include_usage = stream_options.get("include_usage") is True
    stop = parse_stop(body.get("stop"))
    given = body.get(max_name) is not None
    messages = parse_messages(body.get("messages"))
    return ChatRequest(messages, options, stream, include_usage, stop, given, template_kwargs(body))


TEMPLATE_KWARGS = {"enable_thinking": bool}  # what ``chat_template_kwargs`` may set (vLLM's per-request switch)


def template_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """The request's ``chat_template_kwargs``: only the keys this server's template honours, with their types.

    >>> template_kwargs({"chat_template_kwargs": {"enable_thinking": False}}), template_kwargs({})
    ({'enable_thinking': False}, {})
    """
    kwargs = _get(body, "chat_template_kwargs", dict, None) or {}
    for key, value in kwargs.items():
        if key not in TEMPLATE_KWARGS:
            message = f"chat_template_kwargs.{key} is not supported; this server honours {', '.join(TEMPLATE_KWARGS)}."
            raise APIError(400, message, param=f"chat_template_kwargs.{key}", code="unsupported_parameter")
        if not isinstance(value, TEMPLATE_KWARGS[key]):
            message = f"chat_template_kwargs.{key} must be a {TEMPLATE_KWARGS[key].__name__}."
            raise APIError(400, message, param=f"chat_template_kwargs.{key}", code="invalid_type")
    return dict(kwargs)


def fit_context(chat: ChatRequest, prompt_tokens: int, config: ServerConfig) -> None:
    """Check that the prompt and the completion fit the model's context (vLLM's rule and wording), and give a
    request without ``max_tokens`` what the context leaves (at most ``max_tokens_limit``). ``APIError`` 400.

    >>> chat = parse_chat_request({"messages": [{"role": "user", "content": "问"}]}, ServerConfig("m"))
    >>> fit_context(chat, 4000, ServerConfig("m", max_model_len=4096)); chat.options.max_new_tokens
    96
    >>> chat = parse_chat_request({"messages": [{"role": "user", "content": "问"}], "max_tokens": 200}, ServerConfig("m"))
    >>> fit_context(chat, 4000, ServerConfig("m", max_model_len=4096))
    Traceback (most recent call last):
    ...
    medgspo.serve.protocol.APIError: This model's maximum context length is 4096 tokens. However, you requested 4200 tokens (4000 in the messages, 200 in the completion). Please reduce the length of the messages or completion.
    """
    context = config.max_model_len
    if context is None:
        return
    if prompt_tokens >= context or (chat.max_tokens_given and prompt_tokens + chat.options.max_new_tokens > context):
        wanted = chat.options.max_new_tokens if chat.max_tokens_given else 1
        message = (
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, {wanted} in the completion). "
            "Please reduce the length of the messages or completion."
        )
        raise APIError(400, message, param="messages", code="context_length_exceeded")
    if not chat.max_tokens_given:
        chat.options.max_new_tokens = min(chat.options.max_new_tokens, context - prompt_tokens)


# Fields the server does not implement, with the values that ask for nothing (sent by clients as defaults).
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True),
    "response_format": (None, {"type": "text"}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "prediction": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
}


def unsupported(body: dict[str, Any]) -> str | None:
    """The first field that asks for something this server does not do, or ``None``.

    >>> unsupported({"tools": [], "logprobs": False, "presence_penalty": 0}) is None
    True
    >>> unsupported({"response_format": {"type": "json_object"}}), unsupported({"logit_bias": {"11": 5}})
    ('response_format', 'logit_bias')
    """
    return next((k for k, ok in NOT_IMPLEMENTED.items() if k in body and body[k] not in ok), None)


def parse_stop(stop: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``: null, a string, or a list of up to :data:`MAX_STOP` strings (empty ones are dropped).

    >>> parse_stop("。"), parse_stop(["\\n\\n", ""]), parse_stop(None)
    (('。',), ('\\n\\n',), ())
    """
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise APIError(400, "'stop' must be a string or a list of strings.", param="stop", code="invalid_type")
    if len(items) > MAX_STOP:
        message = f"'stop' may hold at most {MAX_STOP} strings (got {len(items)})."
        raise APIError(400, message, param="stop", code="invalid_value")
    return tuple(s for s in items if s)


def _sampling_options(body: dict[str, Any], config: ServerConfig) -> tuple[SamplingOptions, str]:
    """The request's sampling options (the card's defaults) and the name it used for the token limit."""
    max_tokens_limit = config.max_tokens_limit or config.max_model_len or DEFAULT_MAX_TOKENS
    defaults = SamplingOptions(max_new_tokens=max_tokens_limit)
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _get(body, max_name, int, None)
    top_k = _get(body, "top_k", int, defaults.top_k)
    options = SamplingOptions(
        temperature=float(_get(body, "temperature", float, defaults.temperature)),
        top_p=float(_get(body, "top_p", float, defaults.top_p)),
        top_k=0 if top_k == -1 else top_k,  # vLLM's "-1 = off"
        max_new_tokens=max_tokens if max_tokens is not None else defaults.max_new_tokens,
        seed=_get(body, "seed", int, None),
    )
    names = {"max_new_tokens": max_name}
    try:
        options.validate(name=lambda field: names.get(field, field))
    except OptionError as exc:
        raise APIError(400, str(exc), param=names.get(exc.field, exc.field), code="invalid_value") from None
    if config.vocab_size is not None and options.top_k > config.vocab_size:
        message = (
            f"top_k must be <= the vocabulary size {config.vocab_size} (got {options.top_k}); -1 or 0 disable it."
        )
        raise APIError(400, message, param="top_k", code="invalid_value")
    if options.max_new_tokens > max_tokens_limit:
        message = f"{max_name} must be <= {max_tokens_limit} on this server (got {options.max_new_tokens})."
        raise APIError(400, message, param=max_name, code="invalid_value")
    return options, max_name


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


def _get(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """``body[name]`` checked against ``kind`` (ints count as floats, bools never as numbers); null = absent."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        type_name = {int: "an integer", float: "a number", bool: "a boolean", dict: "an object"}[kind]
        message = f"'{name}' must be {type_name} (got {json.dumps(value)[:40]})."
        raise APIError(400, message, param=name, code="invalid_type")
    return value


# ---- responses --------------------------------------------------------------------------------------------------
def completion_body(completion_id: str, model_id: str, result: GenerationResult) -> dict[str, Any]:
    """A ``chat.completion`` object; reasoning in ``reasoning_content``, answer in ``content``."""
    thinking, answer = split_text(result.text, start_in_thinking=result.opens_thinking)
    message = {"role": "assistant", "content": answer, "reasoning_content": thinking}
    choice = {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [choice],
        "usage": usage(result),
    }


def chunk_body(completion_id: str, model_id: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict:
    """One ``chat.completion.chunk`` of a stream."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model_id,
        "choices": [choice],
    }


def usage(result: GenerationResult) -> dict[str, int]:
    """OpenAI's ``usage`` object of one completion.

    >>> usage(GenerationResult("想</think>答", prompt_tokens=20, completion_tokens=4, finish_reason="stop"))
    {'prompt_tokens': 20, 'completion_tokens': 4, 'total_tokens': 24}
    """
    total = result.prompt_tokens + result.completion_tokens
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": total,
    }


def sse(data: Any) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line (``[DONE]`` as is).

    >>> sse({"a": "答"}), sse("[DONE]")
    (b'data: {"a": "\\xe7\\xad\\x94"}\\n\\n', b'data: [DONE]\\n\\n')
    """
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
