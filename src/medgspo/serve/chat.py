"""``medgspo chat``: ask the model a question and watch it think, token by token.

    medgspo chat "患者发热咳嗽3天，最可能的诊断是什么？"          # one question, then exit
    medgspo chat --model Qwen/Qwen3.5-4B --adapter runs/sft/adapter   # interactive: one question per line
    medgspo chat --temperature 0 --max-new-tokens 256 "..."           # greedy, shorter

The reasoning is printed under ``[思考]`` (dimmed on a terminal) and the answer under ``[回答]``. Sampling defaults
are the model card's (temperature 1.0, top_p 0.95, top_k 20). In interactive mode each line is one question,
answered on its own (the model is trained on single questions); ``/exit`` or end of input (Ctrl-D) quits and
Ctrl-C stops the current answer.

:class:`ChatEngine` (model + tokenizer + chat format, one streamed generation at a time) is shared with
``medgspo serve``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from medgspo.data.chat_format import ChatFormat
from medgspo.errors import ModelLoadError
from medgspo.serve.streaming import ANSWER, THINKING, ThinkSplitter, prompt_opens_thinking
from medgspo.utils.generation import SamplingOptions
from medgspo.utils.models import adapter_base_model, check_model_arguments  # noqa: F401

logger = logging.getLogger(__name__)

EXIT_COMMANDS = ("/exit", "/quit")
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_LABELS = {THINKING: "[思考]", ANSWER: "[回答]"}


@dataclass
class GenerationResult:
    """One finished completion: raw text, token counts and why it stopped (``stop`` or ``length``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    opens_thinking: bool = True


class ChatEngine:
    """A loaded model that answers chats one at a time (not thread-safe: callers serialize :meth:`generate`)."""

    def __init__(self, model: Any, tokenizer: Any, chat_format: ChatFormat) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_format = chat_format

    @classmethod
    def load(cls, model: str | None, adapter: str | Path | None = None) -> ChatEngine:
        """Load base model (``tiny``, a folder or a Hub id) plus optional LoRA adapter; errors name what is wrong."""
        from medgspo.utils.models import load_for_inference

        check_model_arguments(model, adapter)
        try:
            return cls(*load_for_inference(model, adapter))
        except (OSError, ValueError, RuntimeError) as exc:  # missing files, or an adapter made for another model
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            what = f"{model!r} with adapter {str(adapter)!r}" if adapter else repr(model)
            raise ModelLoadError(f"cannot load {what}: {first_line}") from exc

    def render(self, messages: list[dict[str, str]]) -> str:
        """The generation prompt for a chat (the chat format's system prompt goes first unless one is given)."""
        if self.chat_format.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.chat_format.system_prompt}, *messages]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_format.chat_template_kwargs()
        )

    def question_messages(self, question: str) -> list[dict[str, str]]:
        """The messages for one standalone question."""
        return self.chat_format.messages(question)

    def generate(
        self,
        messages: list[dict[str, str]],
        options: SamplingOptions,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate one completion; ``on_text`` gets each decoded piece as soon as it is final.

        ``should_stop`` is polled after every token (a client that went away stops the generation early).
        """
        import torch

        prompt = self.render(messages)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        kwargs = options.generate_kwargs()
        if on_text is not None:
            kwargs["streamer"] = _callback_streamer(self.tokenizer, on_text)
        if should_stop is not None:
            kwargs["stopping_criteria"] = _stopping_criteria(should_stop)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs, pad_token_id=self.tokenizer.pad_token_id)
        new_ids = out[0, enc["input_ids"].shape[1] :].tolist()
        return GenerationResult(
            text=self.tokenizer.decode(new_ids, skip_special_tokens=True),
            prompt_tokens=int(enc["input_ids"].shape[1]),
            completion_tokens=len(new_ids),
            finish_reason=self._finish_reason(new_ids, options.max_new_tokens),
            opens_thinking=prompt_opens_thinking(prompt, self.chat_format.think_open),
        )

    def _finish_reason(self, new_ids: list[int], max_new_tokens: int) -> str:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        eos_ids = set(eos) if isinstance(eos, list | tuple) else {eos}
        if len(new_ids) >= max_new_tokens and (not new_ids or new_ids[-1] not in eos_ids):
            return "length"
        return "stop"


def _callback_streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """A transformers ``TextStreamer`` that hands decoded text to ``on_text`` instead of printing it."""
    from transformers import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def on_finalized_text(text: str, stream_end: bool = False) -> None:
        if text:
            on_text(text)

    streamer.on_finalized_text = on_finalized_text
    return streamer


def _stopping_criteria(should_stop: Callable[[], bool]) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopWhen(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), should_stop(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopWhen()])


# ---- terminal output --------------------------------------------------------------------------------------------
class SectionPrinter:
    """Writes streamed events under ``[思考]`` / ``[回答]`` labels, the reasoning dimmed when ``color`` is on."""

    def __init__(self, out: TextIO, *, color: bool, start_in_thinking: bool = True) -> None:
        self.out = out
        self.color = color
        self.splitter = ThinkSplitter(start_in_thinking=start_in_thinking)
        self.start_in_thinking = start_in_thinking
        self.section: str | None = None

    def begin(self) -> None:
        """Show the ``[思考]`` label at once when the completion starts inside the thinking block."""
        if self.start_in_thinking and self.section is None:
            self._start(THINKING)
            self.out.flush()

    def feed(self, piece: str) -> None:
        """Print the events one raw text piece gives."""
        for kind, text in self.splitter.feed(piece):
            self._write(kind, text)

    def finish(self, result: GenerationResult | None) -> None:
        """Print what was held back, close the sections and say why an answer is missing."""
        for kind, text in self.splitter.flush():
            self._write(kind, text)
        if self.section != ANSWER and result is not None:
            self._start(ANSWER)
            if result.finish_reason == "length":
                note = f"（{result.completion_tokens} 个 token 内没有结束思考；可调大 --max-new-tokens）"
            else:
                note = "（模型没有给出回答）"
            self.out.write(note)
        self._end_section()
        self.out.write("\n")
        self.out.flush()

    def _write(self, kind: str, text: str) -> None:
        if kind != self.section:
            self._start(kind)
        self.out.write(text)
        self.out.flush()

    def _start(self, kind: str) -> None:
        if self.section is not None:
            self._end_section()
            self.out.write("\n\n")
        self.section = kind
        self.out.write(_LABELS[kind] + "\n")
        if self.color and kind == THINKING:
            self.out.write(_DIM)

    def _end_section(self) -> None:
        if self.color and self.section == THINKING:
            self.out.write(_RESET)


def answer(engine: ChatEngine, question: str, options: SamplingOptions, out: TextIO, *, color: bool) -> None:
    """Stream the model's thinking and answer to one question to ``out``."""
    messages = engine.question_messages(question)
    printer = SectionPrinter(out, color=color, start_in_thinking=prompt_opens_thinking(engine.render(messages)))
    result = None
    printer.begin()
    try:
        result = engine.generate(messages, options, on_text=printer.feed)
    finally:
        printer.finish(result)


# ---- command line -----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chat`` options to ``parser``."""
    defaults = SamplingOptions()
    parser.add_argument("question", nargs="?", help="the question; without it, read one question per line")
    add_model_arguments(parser)
    parser.add_argument("--temperature", type=float, default=defaults.temperature,
                        help="sampling temperature, 0 = greedy (default %(default)s)")  # fmt: skip
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="nucleus sampling (default %(default)s)")
    parser.add_argument(
        "--top-k", type=int, default=defaults.top_k, help="top-k sampling, 0 = off (default %(default)s)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help="longest completion, thinking included (default %(default)s)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--adapter``, shared by ``chat`` and ``serve``."""
    parser.add_argument("--model", default="tiny",
                        help="base model: a folder, a Hub id, or `tiny` (the embedded tiny model; default)")  # fmt: skip
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder (e.g. the output of `medgspo sft`)")


def options_from_args(args: argparse.Namespace) -> SamplingOptions:
    """The sampling options the flags describe (``ValueError`` names the flag to change)."""
    options = SamplingOptions(args.temperature, args.top_p, args.top_k, args.max_new_tokens, args.seed)
    options.validate(name=lambda field: "--" + field.replace("_", "-"))
    return options


def run(args: argparse.Namespace) -> int:
    """Run ``medgspo chat``; returns the exit code (one-line errors for user mistakes)."""
    try:
        options = options_from_args(args)
        if args.question is not None and not args.question.strip():
            raise ValueError("the question is empty")
        engine = ChatEngine.load(args.model, args.adapter)
    except ValueError as exc:
        return _error(str(exc))
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    if args.question is not None:
        try:
            answer(engine, args.question, options, sys.stdout, color=color)
        except KeyboardInterrupt:
            return 130
        return 0
    return repl(engine, options, sys.stdin, sys.stdout, color=color)


def repl(engine: ChatEngine, options: SamplingOptions, stdin: TextIO, out: TextIO, *, color: bool) -> int:
    """Answer one question per input line until end of input or ``/exit``."""
    interactive = stdin.isatty()
    if interactive:
        out.write("输入问题后回车；/exit 或 Ctrl-D 退出，Ctrl-C 中止当前回答。\n")
    while True:
        if interactive:
            out.write("\n问题> ")
            out.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            out.write("\n")
            return 0
        if not line or line.strip() in EXIT_COMMANDS:
            return 0
        if not line.strip():
            continue
        try:
            answer(engine, line, options, out, color=color)
        except KeyboardInterrupt:
            out.write("（已中止）\n")


def _error(message: str) -> int:
    sys.stderr.write(f"medgspo chat: error: {message}\n")
    return 2
