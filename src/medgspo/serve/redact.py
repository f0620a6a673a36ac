"""No API key in any log line of ``medgspo serve``, whatever a client sends (pure filter + one installer).

aiohttp logs a request it cannot parse with the raw header line in the exception (``b'Authorization: Bearer
sk-...\\r'`` for a key read from a Windows file), and its access log may carry headers. :class:`RedactKeys` is a
``logging.Filter`` on aiohttp's loggers that rewrites each record, message, arguments and traceback text, before any
handler sees it: every ``Authorization`` value, every ``Bearer`` token and every configured key become
``[redacted]``.
"""

from __future__ import annotations

import logging
import re
import traceback

REDACTED = "[redacted]"
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "aiohttp.client")
_AUTH = re.compile(r"(?i)(authorization|x-api-key|api-key)(\s*[:=]\s*)[^\n'\"]*")
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s'\"\\]+")


def redact(text: str, keys: set[str] = frozenset()) -> str:
    """``text`` without header values, bearer tokens or any of ``keys``.

    >>> redact("b'Authorization: Bearer sk-123\\\\r'")
    "b'Authorization: [redacted]'"
    >>> redact("token sk-abc in a message", {"sk-abc"})
    'token [redacted] in a message'
    """
    for key in sorted(keys, key=len, reverse=True):
        if key:
            text = text.replace(key, REDACTED)
    text = _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


class RedactKeys(logging.Filter):
    """Rewrites a record's message and traceback with :func:`redact`; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.keys), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text, record.exc_info = redact(text.rstrip("\n"), self.keys), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.keys)
        return True


_FILTER = RedactKeys()


def install(api_key: str | None) -> None:
    """Redact aiohttp's log records from now on (``api_key`` too, wherever it appears)."""
    if api_key:
        _FILTER.keys.add(api_key)
    for name in AIOHTTP_LOGGERS:
        library = logging.getLogger(name)
        if _FILTER not in library.filters:
            library.addFilter(_FILTER)
