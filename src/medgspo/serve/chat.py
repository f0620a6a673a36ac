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
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from medgspo.data.chat_format import ChatFormat
from medgspo.serve.streaming import ANSWER, THINKING, ThinkSplitter, prompt_opens_thinking

logger = logging.getLogger(__name__)

EXIT_COMMANDS = ("/exit", "/quit")
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_LABELS = {THINKING: "[思考]", ANSWER: "[回答]"}


class ModelLoadError(ValueError):
    """The model or adapter the user named cannot be found or loaded."""


class OptionError(ValueError):
    """A sampling option out of range; ``field`` is the :class:`SamplingOptions` field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class SamplingOptions:
    """How to sample one completion; the defaults are the model card's. ``temperature=0`` means greedy."""

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 512
    seed: int | None = None

    def validate(self, name: Callable[[str], str] = str) -> None:
        """Raise ``ValueError`` naming the option to change; ``name`` maps a field to what the user calls it."""
        checks = {
            "temperature": (0 <= self.temperature <= 2, "must be between 0 and 2"),
            "top_p": (0 < self.top_p <= 1, "must be in (0, 1]"),
            "top_k": (self.top_k >= 0, "must be >= 0, 0 disables it"),
            "max_new_tokens": (self.max_new_tokens >= 1, "must be >= 1"),
        }
        for field_name, (ok, rule) in checks.items():
            if not ok:
                raise OptionError(field_name, f"{name(field_name)} {rule} (got {getattr(self, field_name)})")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }


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


def check_model_arguments(model: str | None, adapter: str | Path | None) -> None:
    """Fail early, with a one-line message, on a missing local model folder or a folder that is not an adapter."""
    if model and _looks_like_path(model) and not Path(model).expanduser().exists():
        raise ModelLoadError(f"model folder not found: {model}")
    if adapter is not None:
        adapter_dir = Path(adapter)
        if not adapter_dir.is_dir():
            raise ModelLoadError(f"adapter folder not found: {adapter}")
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelLoadError(f"not a LoRA adapter folder (no adapter_config.json): {adapter}")


def adapter_base_model(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on, as recorded in its ``adapter_config.json``."""
    path = Path(adapter) / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path") or None
    except (OSError, ValueError):
        return None


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id (``owner/name``): starts with ``.``, ``/`` or ``~``, or has 2+ slashes."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name


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
