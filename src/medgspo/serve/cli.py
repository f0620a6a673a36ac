"""The ``chat``, ``serve`` and ``export`` commands: their flags (dataclasses) and what runs them.

    medgspo chat "患者发热咳嗽3天，最可能的诊断是什么？"                    # one question, then exit
    medgspo chat --model Qwen/Qwen3.5-4B --adapter runs/sft/adapter        # interactive: one question per line
    medgspo serve --adapter runs/sft/adapter --port 8000                   # OpenAI-compatible API + web page
    medgspo export --adapter runs/sft/adapter --output runs/merged         # one standalone model folder

``medgspo.cli`` finds the commands in :data:`COMMANDS`; flags are spelled ``--max_new_tokens`` or
``--max-new-tokens``. A user mistake raises a :class:`~medgspo.errors.UserError` naming the flag, which the entry
point prints as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from medgspo.data.chat_format import FORMAT_FILE
from medgspo.errors import ConfigError
from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.app import create_app, serve
from medgspo.serve.chat import answer, repl
from medgspo.serve.chat_protocol import check_template_kwarg
from medgspo.serve.engine import ChatEngine
from medgspo.serve.export import DTYPES, merge_adapter
from medgspo.serve.protocol import APIError, ServerConfig
from medgspo.utils.cli import Command

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SAMPLING = SamplingOptions()
_SERVER = ServerConfig(model_id="")


@dataclass
class ModelArguments:
    """The model that answers (``chat`` and ``serve``)."""

    model: str = field(
        default="tiny", metadata={"help": "Base model: a folder, a Hub id, or `tiny` (the embedded tiny model)."}
    )
    adapter: str | None = field(
        default=None, metadata={"help": "LoRA adapter folder (e.g. the output of `medgspo sft`)."}
    )


@dataclass
class ChatArguments:
    """How ``chat`` samples (the model card's defaults); checked when parsed."""

    temperature: float = field(default=_SAMPLING.temperature, metadata={"help": "Sampling temperature, 0 = greedy."})
    top_p: float = field(default=_SAMPLING.top_p, metadata={"help": "Nucleus sampling."})
    top_k: int = field(default=_SAMPLING.top_k, metadata={"help": "Top-k sampling, 0 = off."})
    max_new_tokens: int = field(
        default=_SAMPLING.max_new_tokens, metadata={"help": "Longest completion, thinking included."}
    )
    seed: int | None = field(default=None, metadata={"help": "Random seed for reproducible sampling."})

    def __post_init__(self) -> None:
        self.sampling()

    def sampling(self) -> SamplingOptions:
        """The sampling options; :class:`~medgspo.modeling.generation.OptionError` names the flag to change."""
        options = SamplingOptions(self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.seed)
        options.validate(name=lambda name: "--" + name)
        return options


@dataclass
class ServeArguments:
    """Where ``serve`` listens and its limits; checked when parsed."""

    host: str = field(
        default="127.0.0.1", metadata={"help": "Address to listen on (127.0.0.1: this machine; 0.0.0.0: all)."}
    )
    port: int = field(default=8000, metadata={"help": "Port to listen on (0: a free one)."})
    served_model_name: str | None = field(
        default=None, metadata={"help": "The `model` name clients use (default: the --adapter path, else --model)."}
    )
    api_key_env: str | None = field(
        default=None,
        metadata={"help": "Environment variable holding an API key; clients must then send it as a Bearer token."},
    )
    max_tokens_limit: int | None = field(
        default=None,
        metadata={
            "help": "Largest max_tokens a request may ask for (default: the model's context, or --max_model_len)."
        },
    )
    max_model_len: int | None = field(
        default=None,
        metadata={"help": "Context the server allows: prompt + max_tokens must fit (default: the model's own)."},
    )
    max_body_bytes: int = field(
        default=_SERVER.max_body_bytes, metadata={"help": "Largest request body; bigger ones get 413."}
    )
    max_batch_size: int = field(
        default=_SERVER.max_batch_size,
        metadata={"help": "Requests generated together in one batch (continuous batching); 1 = one at a time."},
    )
    max_queue: int = field(
        default=_SERVER.max_queue,
        metadata={"help": "Requests that may wait while the batch is full; more get 503 with Retry-After."},
    )
    prefill_chunk: int = field(
        default=_SERVER.prefill_chunk,
        metadata={
            "help": "Prompt tokens per forward pass: longer prompts are prefilled in chunks between decode steps."
        },
    )
    keepalive_timeout: float = field(
        default=_SERVER.keepalive_timeout,
        metadata={"help": "Seconds for a request's headers (and body) to arrive, and for an idle connection to stay."},
    )
    default_chat_template_kwargs: str | None = field(
        default=None,
        metadata={"help": "Chat template keywords for every request, as JSON, e.g. '{\"enable_thinking\": false}'."},
    )

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
        self.template_kwargs()

    def template_kwargs(self) -> dict[str, Any] | None:
        """``--default_chat_template_kwargs`` parsed; ``ConfigError`` for bad JSON or a keyword not honoured."""
        if self.default_chat_template_kwargs is None:
            return None
        flag = "--default_chat_template_kwargs"
        try:
            kwargs = json.loads(self.default_chat_template_kwargs)
        except ValueError:
            raise ConfigError(f"{flag} must be a JSON object (got {self.default_chat_template_kwargs!r})") from None
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{flag} must be a JSON object (got {self.default_chat_template_kwargs!r})")
        try:
            for key, value in kwargs.items():
                check_template_kwarg(key, value, f"{flag} {key}")
        except APIError as exc:
            raise ConfigError(exc.message) from None
        return kwargs

    def to_config(self, model: ModelArguments) -> ServerConfig:
        """The :class:`ServerConfig` these flags describe; the API key is read from ``--api_key_env`` here."""
        api_key = None
        if self.api_key_env:
            api_key = os.environ.get(self.api_key_env, "").strip()
            if not api_key:
                raise ConfigError(f"--api_key_env {self.api_key_env}: that environment variable is not set or empty")
        model_id = self.served_model_name or (str(model.adapter) if model.adapter else model.model)
        return ServerConfig(
            model_id,
            api_key,
            max_tokens_limit=self.max_tokens_limit,
            max_model_len=self.max_model_len,
            max_body_bytes=self.max_body_bytes,
            max_batch_size=self.max_batch_size,
            max_queue=self.max_queue,
            default_template_kwargs=self.template_kwargs(),
            prefill_chunk=self.prefill_chunk,
            keepalive_timeout=self.keepalive_timeout,
        )


@dataclass
class ExportArguments:
    """What ``export`` merges and where it writes the merged model."""

    adapter: str = field(metadata={"help": "LoRA adapter folder (e.g. the output of `medgspo sft`)."})
    output: str = field(metadata={"help": "Folder to write the merged model to."})
    model: str | None = field(
        default=None,
        metadata={"help": "Base model (folder, Hub id or `tiny`); default: the one recorded in the adapter."},
    )
    dtype: str = field(
        default="auto", metadata={"help": "dtype of the saved weights (auto: the base model's).", "choices": DTYPES}
    )
    overwrite: bool = field(default=False, metadata={"help": "Write into a non-empty --output folder."})
    merge: bool = field(
        default=True,
        metadata={
            "help": "false: write the adapter (not merged) renamed for the base checkpoint's own class, as "
            "`vllm serve BASE --enable-lora` needs it."
        },
    )


# ---- running them -----------------------------------------------------------------------------------------------
def run_chat(model: ModelArguments, args: ChatArguments, positionals: argparse.Namespace) -> int:
    """``medgspo chat``: answer the question, or one question per line of standard input."""
    question = positionals.question
    if question is not None and not question.strip():
        raise ConfigError("the question is empty")
    engine = ChatEngine.load(model.model, model.adapter)
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    if question is None:
        return repl(engine, args.sampling(), sys.stdin, sys.stdout, color=color)
    answer(engine, question, args.sampling(), sys.stdout, color=color)
    return 0


def run_serve(model: ModelArguments, args: ServeArguments) -> int:
    """``medgspo serve``: serve until Ctrl-C or SIGTERM (both exit 0)."""
    config = args.to_config(model)
    engine = ChatEngine.load(model.model, model.adapter)
    if args.host not in LOOPBACK and not config.api_key:
        logger.warning(
            "Listening on %s without an API key: anyone who can reach this port can use the model.", args.host
        )

    def started(url: str) -> None:
        key_note = " (API key required)" if config.api_key else ""
        print(f"Serving `{config.model_id}`{key_note}\n  web page: {url}/\n  API:      {url}/v1", flush=True)

    try:
        asyncio.run(serve(create_app(engine, config), args.host, args.port, started))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped, not an error
        pass
    return 0


def run_export(args: ExportArguments) -> int:
    """``medgspo export``: merge, save, and list the files written."""
    try:
        output = merge_adapter(
            args.model, args.adapter, args.output, dtype=args.dtype, overwrite=args.overwrite, merge=args.merge
        )
    except OSError as exc:
        raise ConfigError(f"cannot export to {args.output}: {exc}") from None
    files = sorted(p.name for p in output.iterdir())
    what = "Merged model" if args.merge else "Adapter for vllm serve --enable-lora"
    print(f"{what}: {output}\n  files: {', '.join(files)}\n  {FORMAT_FILE} copied from {args.adapter}")
    return 0


COMMANDS = [
    Command(
        "chat",
        (ModelArguments, ChatArguments),
        run_chat,
        "Ask a question and watch the model think, token by token (no question: one question per line).",
        positionals=(("question", {"nargs": "?", "help": "The question; without it, read one question per line."}),),
    ),
    Command(
        "serve",
        (ModelArguments, ServeArguments),
        run_serve,
        "An OpenAI-compatible chat-completions API and a web page for one model.",
    ),
    Command(
        "export",
        (ExportArguments,),
        run_export,
        "Merge a LoRA adapter into its base model and save one standalone model folder.",
    ),
]
