"""What the two OpenAI generation endpoints of ``medgspo serve`` share on the wire (pure: no HTTP, no model).

    params = parse_generation(body, ServerConfig("medgspo"))    # sampling, penalties, stop, n, stream; or APIError
    fit_context(params, prompt_tokens, config)                  # prompt + max_tokens must fit the context
    sse({"choices": [...]})                                     # one streamed event

The chat endpoint's own fields are in :mod:`medgspo.serve.chat_protocol`, the completions endpoint's in
:mod:`medgspo.serve.text_protocol`. Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medgspo.modeling.generation import OptionError, SamplingOptions
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import GenerationResult
from medgspo.serve.sampling import LogitRules

logger = logging.getLogger(__name__)

Describe = Callable[[int], tuple[str, list[int]]]  # token id -> (its text, its UTF-8 bytes), for logprobs
MAX_STOP = 4  # OpenAI's limit on stop strings
MAX_TOP_LOGPROBS = 20  # OpenAI's limit on top_logprobs (chat); vLLM takes the same on /v1/completions
MAX_LOGIT_BIAS = 1024  # entries in one logit_bias (ours: OpenAI documents no count)
PENALTY_RANGE = (-2.0, 2.0)  # presence_penalty, frequency_penalty (OpenAI's range)
BIAS_RANGE = (-100.0, 100.0)  # each logit_bias value (OpenAI's range)


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
class Generation:
    """What both endpoints take for generating: sampling options, logit rules, stop strings, ``n``, streaming."""

    options: SamplingOptions
    rules: LogitRules
    stop: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    max_tokens_given: bool = False  # else the budget is what the context leaves (:func:`fit_context`)


def check_body(body: Any, config: ServerConfig) -> dict[str, Any]:
    """A request body must be a JSON object; a ``model`` in it must be the served one (404 ``model_not_found``)."""
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and model != config.model_id:
        message = f"The model `{model}` does not exist; this server serves `{config.model_id}`."
        raise APIError(404, message, param="model", code="model_not_found")
    return body


def parse_generation(body: dict[str, Any], config: ServerConfig, default_max_tokens: int | None = None) -> Generation:
    """The generation fields of a request body (the card's sampling defaults); ``APIError`` 400 names the field.

    ``default_max_tokens`` is the budget of a request without ``max_tokens`` (None: what the context leaves).

    >>> params = parse_generation({"top_k": -1, "presence_penalty": 0.5, "logit_bias": {"7": -100}}, ServerConfig("m"))
    >>> params.options.top_k, params.rules, params.options.max_new_tokens
    (0, LogitRules(presence_penalty=0.5, frequency_penalty=0.0, logit_bias=((7, -100.0),)), 1024)
    """
    if (field := unsupported(body)) is not None:
        message = f"'{field}' is not supported by this server; leave it out (or at its default) to go on."
        raise APIError(400, message, param=field, code="unsupported_parameter")
    options, max_name = _sampling_options(body, config, default_max_tokens)
    stream = bool(field_value(body, "stream", bool, False))
    if body.get("stream_options") is not None and not stream:
        message = "'stream_options' is only allowed when 'stream' is true."
        raise APIError(400, message, param="stream_options", code="invalid_value")
    include_usage = field_value(body, "stream_options", dict, {}).get("include_usage") is True
    n = field_value(body, "n", int, 1)
    if not 1 <= n <= config.max_batch_size:
        message = f"'n' must be between 1 and {config.max_batch_size} on this server (got {n})."
        raise APIError(400, message, param="n", code="invalid_value")
    given = body.get(max_name) is not None
    return Generation(
        options, _logit_rules(body, config), parse_stop(body.get("stop")), n, stream, include_usage, given
    )


def fit_context(params: Generation, prompt_tokens: int, config: ServerConfig) -> None:
    """Check that the prompt and the completion fit the model's context (vLLM's rule and wording), and give a
    request without ``max_tokens`` what the context leaves (at most ``max_tokens_limit``). ``APIError`` 400.

    >>> params = parse_generation({}, ServerConfig("m"))
    >>> fit_context(params, 4000, ServerConfig("m", max_model_len=4096)); params.options.max_new_tokens
    96
    >>> fit_context(parse_generation({"max_tokens": 200}, ServerConfig("m")), 4000, ServerConfig("m", max_model_len=4096))
    Traceback (most recent call last):
    ...
    medgspo.serve.protocol.APIError: This model's maximum context length is 4096 tokens. However, you requested 4200 tokens (4000 in the messages, 200 in the completion). Please reduce the length of the messages or completion.
    """
    context = config.max_model_len
    if context is None:
        return
    if prompt_tokens >= context or (
        params.max_tokens_given and prompt_tokens + params.options.max_new_tokens > context
    ):
        wanted = params.options.max_new_tokens if params.max_tokens_given else 1
        message = (
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, {wanted} in the completion). "
            "Please reduce the length of the messages or completion."
        )
        raise APIError(400, message, param="messages", code="context_length_exceeded")
    if not params.max_tokens_given:
        params.options.max_new_tokens = min(params.options.max_new_tokens, context - prompt_tokens)


# Fields the server does not implement, with the values that ask for nothing (sent by clients as defaults).
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True),
    "response_format": (None, {"type": "text"}),
    "prediction": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "best_of": (None, 1),  # /v1/completions
    "suffix": (None, ""),  # /v1/completions: no fill-in-the-middle
}


def unsupported(body: dict[str, Any]) -> str | None:
    """The first field that asks for something this server does not do, or ``None``.

    >>> unsupported({"tools": [], "tool_choice": "none", "user": "u1"}) is None
    True
    >>> unsupported({"response_format": {"type": "json_object"}}), unsupported({"best_of": 3})
    ('response_format', 'best_of')
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


def _sampling_options(
    body: dict[str, Any], config: ServerConfig, default_max_tokens: int | None
) -> tuple[SamplingOptions, str]:
    """The request's sampling options (the card's defaults) and the name it used for the token limit."""
    max_tokens_limit = config.max_tokens_limit or config.max_model_len or DEFAULT_MAX_TOKENS
    defaults = SamplingOptions(max_new_tokens=min(default_max_tokens or max_tokens_limit, max_tokens_limit))
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = field_value(body, max_name, int, None)
    top_k = field_value(body, "top_k", int, defaults.top_k)
    options = SamplingOptions(
        temperature=float(field_value(body, "temperature", float, defaults.temperature)),
        top_p=float(field_value(body, "top_p", float, defaults.top_p)),
        top_k=0 if top_k == -1 else top_k,  # vLLM's "-1 = off"
        max_new_tokens=max_tokens if max_tokens is not None else defaults.max_new_tokens,
        seed=field_value(body, "seed", int, None),
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


def _logit_rules(body: dict[str, Any], config: ServerConfig) -> LogitRules:
    """``presence_penalty``, ``frequency_penalty`` (-2 to 2) and ``logit_bias`` (token id -> -100 to 100)."""
    penalties = {}
    for name in ("presence_penalty", "frequency_penalty"):
        value = float(field_value(body, name, float, 0.0))
        if not PENALTY_RANGE[0] <= value <= PENALTY_RANGE[1]:
            message = f"{name} must be between {PENALTY_RANGE[0]:g} and {PENALTY_RANGE[1]:g} (got {value:g})."
            raise APIError(400, message, param=name, code="invalid_value")
        penalties[name] = value
    return LogitRules(**penalties, logit_bias=_logit_bias(field_value(body, "logit_bias", dict, None) or {}, config))


def _logit_bias(bias: dict[str, Any], config: ServerConfig) -> tuple[tuple[int, float], ...]:
    if len(bias) > MAX_LOGIT_BIAS:
        message = f"logit_bias may hold at most {MAX_LOGIT_BIAS} tokens (got {len(bias)})."
        raise APIError(400, message, param="logit_bias", code="invalid_value")
    pairs = []
    for key, value in bias.items():
        token = int(key) if key.isascii() and key.isdigit() else -1
        if token < 0 or (config.vocab_size is not None and token >= config.vocab_size):
            vocab = f" below the vocabulary size {config.vocab_size}" if config.vocab_size else ""
            message = f"logit_bias keys must be token ids{vocab} (got {key[:20]!r})."
            raise APIError(400, message, param="logit_bias", code="invalid_value")
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not BIAS_RANGE[0] <= value <= BIAS_RANGE[1]:
            message = f"logit_bias values must be numbers from -100 to 100 (token {token}: {json.dumps(value)[:20]})."
            raise APIError(400, message, param="logit_bias", code="invalid_value")
        pairs.append((token, float(value)))
    return tuple(pairs)


def top_logprobs_count(value: Any, name: str, limit: int = MAX_TOP_LOGPROBS) -> int:
    """A ``top_logprobs`` / completions ``logprobs`` count: an integer from 0 to ``limit``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        message = f"'{name}' must be an integer from 0 to {limit} (got {json.dumps(value)[:20]})."
        raise APIError(400, message, param=name, code="invalid_value")
    return value


def field_value(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
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


# ---- responses ----------------------------------------------------------------------------------------------------
def usage(results: list[GenerationResult], prompt_tokens: int | None = None) -> dict[str, int]:
    """OpenAI's ``usage`` object of a request's completions; ``prompt_tokens`` counts each prompt once (the ``n``
    choices of one prompt share it), default: the first result's.

    >>> usage([GenerationResult("想</think>答", prompt_tokens=20, completion_tokens=4, finish_reason="stop")])
    {'prompt_tokens': 20, 'completion_tokens': 4, 'total_tokens': 24}
    """
    prompt = results[0].prompt_tokens if prompt_tokens is None else prompt_tokens
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(data: Any) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line (``[DONE]`` as is).

    >>> sse({"a": "答"}), sse("[DONE]")
    (b'data: {"a": "\\xe7\\xad\\x94"}\\n\\n', b'data: [DONE]\\n\\n')
    """
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
