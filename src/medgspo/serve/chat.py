"""The terminal side of ``medgspo chat``: stream the model's thinking and answer to a terminal, one question at a time.

    answer(engine, "患者发热咳嗽3天，最可能的诊断是什么？", SamplingOptions(), sys.stdout, color=True)
    repl(engine, SamplingOptions(), sys.stdin, sys.stdout, color=True)     # one question per line

The reasoning is written under ``[思考]`` (dimmed on a terminal) and the answer under ``[回答]``. In the loop each
line is one question, answered on its own (the model is trained on single questions); ``/exit`` or end of input
(Ctrl-D) quits and Ctrl-C stops the current answer. The flags live in :mod:`medgspo.serve.cli`.
"""

from __future__ import annotations

import logging
from typing import TextIO

from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.engine import ChatEngine, GenerationResult
from medgspo.serve.streaming import ANSWER, THINKING, ThinkSplitter, prompt_opens_thinking

logger = logging.getLogger(__name__)

EXIT_COMMANDS = ("/exit", "/quit")
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_LABELS = {THINKING: "[思考]", ANSWER: "[回答]"}


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
                note = f"（{result.completion_tokens} 个 token 内没有结束思考；可调大 --max_new_tokens）"
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


def repl(engine: ChatEngine, options: SamplingOptions, stdin: TextIO, out: TextIO, *, color: bool) -> int:
    """Answer one question per input line until end of input or ``/exit``; Ctrl-C stops only the current answer."""
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
