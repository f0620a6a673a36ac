"""Split a streamed completion into reasoning and answer pieces as the text arrives (pure, no model).

``medgspo chat`` prints the events and ``medgspo serve`` turns them into ``reasoning_content`` / ``content`` deltas:

    splitter = ThinkSplitter()
    for piece in pieces:                 # decoded text, any chunking
        for kind, text in splitter.feed(piece):
            ...                          # kind is "thinking" or "answer"
    for kind, text in splitter.flush():
        ...

Rules (the DeepSeek / vLLM reasoning-parser convention, matching :func:`medgspo.data.chat_format.split_completion` on
well-formed completions):

* a completion starts inside the thinking block (Qwen3.5 prompts end with ``<think>\\n``) unless told otherwise; a
  completion that starts outside it enters it on a leading ``<think>``;
* the first ``</think>`` ends the reasoning; everything after it is the answer;
* tags (``<think>``, ``</think>``) and end markers (``<|im_end|>``, ``<|endoftext|>``) are never emitted, even when
  a piece boundary cuts them in two; stray tags inside a section are dropped;
* whitespace at the start and end of each section is dropped (trailing whitespace is held back until more text
  shows it is not trailing), so joined events equal the stripped sections.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from medgspo.data.chat_format import THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)

THINKING = "thinking"
ANSWER = "answer"
END_MARKERS = ("<|im_end|>", "<|endoftext|>")

Event = tuple[str, str]  # (THINKING | ANSWER, text piece)


class Sections(NamedTuple):
    """A whole completion split into reasoning and answer, as the streamed events would give it."""

    thinking: str
    answer: str


class ThinkSplitter:
    """Incremental splitter: :meth:`feed` raw text pieces, then :meth:`flush` once at the end."""

    def __init__(
        self, *, start_in_thinking: bool = True, think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE
    ) -> None:
        self.section = THINKING if start_in_thinking else ANSWER
        self.think_open = think_open
        self.think_close = think_close
        self._tags = (think_open, think_close, *END_MARKERS)
        self._buffer = ""  # text not yet scanned for tags (may end with the first part of a tag)
        self._pending_space = ""  # whitespace that is emitted only if more text follows in the same section
        self._section_started = False  # the current section has emitted text
        self._closed = False  # a `</think>` was seen

    def feed(self, piece: str) -> list[Event]:
        """Events for one more piece of raw text (possibly none while a tag may still be forming)."""
        self._buffer += piece
        events: list[Event] = []
        while True:
            index, tag = _first_tag(self._buffer, self._tags)
            if tag is None:
                break
            self._emit(self._buffer[:index], events)
            self._buffer = self._buffer[index + len(tag) :]
            self._on_tag(tag)
        keep = _partial_tag_length(self._buffer, self._tags)
        cut = len(self._buffer) - keep
        self._emit(self._buffer[:cut], events)
        self._buffer = self._buffer[cut:]
        return _merge(events)

    def flush(self) -> list[Event]:
        """Events for text held back at the end of the stream (a would-be tag that never completed)."""
        events: list[Event] = []
        self._emit(self._buffer, events)
        self._buffer = ""
        self._pending_space = ""
        return _merge(events)

    def _emit(self, text: str, events: list[Event]) -> None:
        if not self._section_started:
            text = text.lstrip()
        if not text:
            return
        body = text.rstrip()
        if not body:
            self._pending_space += text
            return
        events.append((self.section, self._pending_space + body))
        self._pending_space = text[len(body) :]
        self._section_started = True

    def _on_tag(self, tag: str) -> None:
        if tag == self.think_close and self.section == THINKING:
            self._switch(ANSWER)
            self._closed = True
        elif tag == self.think_open and self.section == ANSWER and not self._section_started and not self._closed:
            self._switch(THINKING)

    def _switch(self, section: str) -> None:
        self.section = section
        self._section_started = False
        self._pending_space = ""


def split_stream(pieces: Iterable[str], *, start_in_thinking: bool = True) -> Iterator[Event]:
    """Yield ``(kind, text)`` events from raw streamed text pieces.

    >>> list(split_stream(["我先想", "一想。\\n</th", "ink>\\n\\n诊断为", "肺炎。"]))
    [('thinking', '我先想'), ('thinking', '一想。'), ('answer', '诊断为'), ('answer', '肺炎。')]
    """
    splitter = ThinkSplitter(start_in_thinking=start_in_thinking)
    for piece in pieces:
        yield from splitter.feed(piece)
    yield from splitter.flush()


def split_text(text: str, *, start_in_thinking: bool = True) -> Sections:
    """The whole-text counterpart of :func:`split_stream` (what a non-streamed response returns).

    >>> split_text("<think>\\n想一想\\n</think>\\n\\n是肺炎。<|im_end|>")
    Sections(thinking='想一想', answer='是肺炎。')
    """
    return join_events(split_stream([text], start_in_thinking=start_in_thinking))


def join_events(events: Iterable[Event]) -> Sections:
    """Concatenate events into their two sections."""
    parts: dict[str, list[str]] = {THINKING: [], ANSWER: []}
    for kind, text in events:
        parts[kind].append(text)
    return Sections("".join(parts[THINKING]), "".join(parts[ANSWER]))


def prompt_opens_thinking(prompt: str, think_open: str = THINK_OPEN) -> bool:
    """Whether a rendered generation prompt leaves the model inside the thinking block.

    >>> prompt_opens_thinking("<|im_start|>assistant\\n<think>\\n")
    True
    >>> prompt_opens_thinking("<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n")
    False
    """
    return prompt.rstrip().endswith(think_open)


def _first_tag(text: str, tags: tuple[str, ...]) -> tuple[int, str | None]:
    best_index, best_tag = len(text), None
    for tag in tags:
        index = text.find(tag)
        if index != -1 and index < best_index:
            best_index, best_tag = index, tag
    return best_index, best_tag


def _partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a tag (to hold back for the next piece)."""
    longest = min(len(text), max(len(tag) for tag in tags) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(tag.startswith(tail) for tag in tags):
            return size
    return 0


def _merge(events: list[Event]) -> list[Event]:
    merged: list[Event] = []
    for kind, text in events:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged
