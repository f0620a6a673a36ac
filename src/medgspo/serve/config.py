"""``ServerConfig``: the flags of ``medgspo serve`` and the object the server runs on (one class, one check).

    config = ServerConfig(served_model_name="medical", api_key_env="MEDGSPO_API_KEY")   # or parsed from the flags
    config.fit_model(model)      # the model's vocabulary and context, once, when the app is made

The API key is read from the environment variable ``--api_key_env`` names when the config is made; it is never a
flag, never logged and never printed. ``served_model_name`` defaults to the adapter path, else the model
(:meth:`ServerConfig.name_after`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from medgspo.errors import ConfigError
from medgspo.utils.cli import json_object

TEMPLATE_KWARGS = {"enable_thinking": bool}  # the chat template keywords a request may set (vLLM's switch)


def template_kwarg_problem(key: str, value: Any) -> str | None:
    """Why ``key: value`` is not a chat template keyword this server honours, or ``None``.

    >>> template_kwarg_problem("enable_thinking", False), template_kwarg_problem("tools", [])
    (None, 'is not supported; this server honours enable_thinking')
    """
    if key not in TEMPLATE_KWARGS:
        return f"is not supported; this server honours {', '.join(TEMPLATE_KWARGS)}"
    if not isinstance(value, TEMPLATE_KWARGS[key]):
        return f"must be a {TEMPLATE_KWARGS[key].__name__}"
    return None


def _flag(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class ServerConfig:
    """What one server serves, where it listens and its limits; checked when made."""

    served_model_name: str | None = _flag(
        None, "The `model` name clients use (default: the --adapter path, else --model)."
    )
    host: str = _flag("127.0.0.1", "Address to listen on (127.0.0.1: this machine; 0.0.0.0: all).")
    port: int = _flag(8000, "Port to listen on (0: a free one).")
    api_key_env: str | None = _flag(
        None, "Environment variable holding an API key; clients must then send it as a Bearer token."
    )
    max_tokens_limit: int | None = _flag(
        None, "Largest max_tokens a request may ask for (default: the model's context, or --max_model_len)."
    )
    max_model_len: int | None = _flag(
        None, "Context the server allows: prompt + max_tokens must fit (default: the model's own)."
    )
    max_body_bytes: int = _flag(1 << 20, "Largest request body; bigger ones get 413.")
    max_batch_size: int = _flag(
        16, "Requests generated together in one batch (continuous batching); 1 = one at a time."
    )
    max_queue: int = _flag(64, "Requests that may wait while the batch is full; more get 503 with Retry-After.")
    prefill_chunk: int = _flag(
        512, "Prompt tokens per forward pass: longer prompts are prefilled in chunks between decode steps."
    )
    keepalive_timeout: float = _flag(
        10.0, "Seconds for a request's headers (and body) to arrive, and for an idle connection to stay."
    )
    default_chat_template_kwargs: dict | str | None = _flag(
        None, "Chat template keywords for every request, as JSON, e.g. '{\"enable_thinking\": false}'."
    )
    api_key: str | None = field(default=None, init=False, repr=False)  # from the environment, never a flag
    vocab_size: int | None = field(default=None, init=False)  # the model's (:meth:`fit_model`); top_k must fit it

    def __post_init__(self) -> None:
        for name in ("max_tokens_limit", "max_model_len", "max_body_bytes", "max_batch_size", "prefill_chunk"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_queue < 0:
            raise ConfigError(f"--max_queue must be >= 0 (got {self.max_queue})")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535 (got {self.port})")
        if not self.keepalive_timeout > 0:
            raise ConfigError(f"--keepalive_timeout must be > 0 (got {self.keepalive_timeout})")
        self.default_chat_template_kwargs = _template_kwargs(self.default_chat_template_kwargs)
        if self.api_key_env:
            self.api_key = os.environ.get(self.api_key_env, "").strip()
            if not self.api_key:
                raise ConfigError(f"--api_key_env {self.api_key_env}: that environment variable is not set or empty")

    @property
    def model_id(self) -> str:
        """The served name (``served_model_name``; :meth:`name_after` gives it a default)."""
        return self.served_model_name or "medgspo"

    def name_after(self, model: str, adapter: str | None) -> ServerConfig:
        """Serve under the adapter path, else the model, unless ``--served_model_name`` was given."""
        self.served_model_name = self.served_model_name or (str(adapter) if adapter else model)
        return self

    def fit_model(self, model: Any) -> ServerConfig:
        """Fill in what the model sets: its vocabulary (``top_k`` must fit it), its context (``max_model_len``:
        prompt + ``max_tokens`` must fit it) and ``max_tokens_limit`` (the context unless lowered)."""
        text_config = getattr(model.config, "text_config", None) or model.config
        context = self.max_model_len or getattr(text_config, "max_position_embeddings", None)
        limit = self.max_tokens_limit or context
        self.vocab_size = self.vocab_size or int(model.get_output_embeddings().weight.shape[0])
        self.max_model_len = context
        self.max_tokens_limit = min(limit, context) if limit and context else limit
        return self


def _template_kwargs(value: dict | str | None) -> dict[str, Any] | None:
    """``--default_chat_template_kwargs`` as a dict; ``ConfigError`` for bad JSON or a keyword not honoured."""
    flag = "--default_chat_template_kwargs"
    if value is None:
        return None
    if isinstance(value, str):
        value = json_object(value, flag)
    for key, item in value.items():
        if (problem := template_kwarg_problem(key, item)) is not None:
            raise ConfigError(f"{flag} {key} {problem}")
    return value
