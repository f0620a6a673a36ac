"""Token ids to streamed text, one token at a time, and OpenAI ``stop`` strings (pure: any ``decode`` function).

The batcher of ``medgspo serve`` keeps one of each per request:

    text = IncrementalDecoder(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    stops = StopMatcher(["\\n\\n"])
    piece = stops.feed(text.add(token_id))      # text that is final and before any stop string
    if stops.hit: ...                           # a stop string appeared: the completion ends here, without it
    tail = stops.feed(text.flush()) + stops.flush()   # at the end

:class:`IncrementalDecoder` decodes a short window of recent tokens (vLLM's "prefix offset" method), so a step costs
the same however long the completion is, and holds text back while the window ends in an incomplete UTF-8 character
(a Chinese character can span two byte-level tokens). :class:`StopMatcher` holds back the end of the text while it
could still grow into a stop string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"  # what decoding an incomplete UTF-8 sequence gives


class IncrementalDecoder:
    """Decoded text of a growing list of token ids, handed out in final pieces.

    >>> pieces = {(1,): "a", (1, 2): "a\\ufffd", (1, 2, 3): "a中", (2,): "\\ufffd", (2, 3): "中", (3,): "?"}
    >>> decoder = IncrementalDecoder(lambda ids: pieces.get(tuple(ids), ""))
    >>> [decoder.add(1), decoder.add(2), decoder.add(3), decoder.flush()]
    ['a', '', '中', '']
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the decoding window (a little context before the unread tokens)
        self._read = 0  # tokens before this index have been handed out as text

    def add(self, token_id: int) -> str:
        """Text that ``token_id`` completes ('' while a character is still incomplete)."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character decodes as U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self.decode(self.ids[self._prefix : self._read])
        now = self.decode(self.ids[self._prefix :])
        if len(now) <= len(before) or (now.endswith(REPLACEMENT) and not final):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return now[len(before) :]


class StopMatcher:
    """Cuts a stream of text at the first of the ``stops`` strings (the stop string itself is not returned).

    >>> stops = StopMatcher(["END"])
    >>> [stops.feed("abc E"), stops.feed("N"), stops.feed("Dx"), stops.hit, stops.text]
    ['abc ', '', '', True, 'abc ']
    >>> StopMatcher([]).feed("no stops: everything passes")
    'no stops: everything passes'
    """

    def __init__(self, stops: Iterable[str] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""  # everything accepted so far (cut at the stop string once one is found)
        self.hit = False
        self._sent = 0
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, piece: str) -> str:
        """The text that is now safe to send (nothing more once a stop string was found)."""
        if self.hit or not piece:
            return ""
        self.text += piece
        start = max(0, self._sent - self._longest + 1)
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i != -1]
        if found:
            self.text = self.text[: min(found)]
            self.hit = True
            return self._send(len(self.text))
        return self._send(len(self.text) - self._partial_stop_length())

    def flush(self) -> str:
        """The held-back end of the text (the stream ended without completing a stop string)."""
        return self._send(len(self.text))

    def _send(self, end: int) -> str:
        end = max(end, self._sent)
        piece, self._sent = self.text[self._sent : end], end
        return piece

    def _partial_stop_length(self) -> int:
        """Length of the longest end of the text that is the beginning of a stop string."""
        for size in range(min(self._longest - 1, len(self.text) - self._sent), 0, -1):
            tail = self.text[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0
