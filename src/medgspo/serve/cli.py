"""The ``chat`` and ``serve`` commands: their flags (dataclasses) and what runs them (``export``: :mod:`medgspo.publish.cli`).

    medgspo chat "患者发热咳嗽3天，最可能的诊断是什么？"                    # one question, then exit
    medgspo chat --model Qwen/Qwen3.5-4B --adapter runs/sft/adapter        # interactive: one question per line
    medgspo serve --adapter runs/sft/adapter --port 8000                   # OpenAI-compatible API + web page

``medgspo.cli`` finds the commands in :data:`COMMANDS`; flags are spelled ``--max_new_tokens`` or
``--max-new-tokens``. A user mistake raises a :class:`~medgspo.errors.UserError` naming the flag, which the entry
point prints as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field

from medgspo.errors import ConfigError
from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.app import create_app, serve
from medgspo.serve.chat import answer, repl
from medgspo.serve.engine import ChatEngine
from medgspo.serve.protocol import ServerConfig
from medgspo.utils.cli import Command

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SAMPLING = SamplingOptions()


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


def run_serve(model: ModelArguments, config: ServerConfig) -> int:
    """``medgspo serve``: serve until Ctrl-C or SIGTERM (both exit 0)."""
    config.name_after(model.model, model.adapter)
    engine = ChatEngine.load(model.model, model.adapter)
    if config.host not in LOOPBACK and not config.api_key:
        logger.warning(
            "Listening on %s without an API key: anyone who can reach this port can use the model.", config.host
        )

    def started(url: str) -> None:
        key_note = " (API key required)" if config.api_key else ""
        print(f"Serving `{config.model_id}`{key_note}\n  web page: {url}/\n  API:      {url}/v1", flush=True)

    try:
        asyncio.run(serve(create_app(engine, config), config.host, config.port, started))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped, not an error
        pass
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
        (ModelArguments, ServerConfig),
        run_serve,
        "An OpenAI-compatible chat-completions API and a web page for one model.",
    ),
]
