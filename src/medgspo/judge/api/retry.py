"""The judge's HTTP retry policy: which failures are retried, how long to wait, and what stops a run.

Pure decisions the client (:mod:`.client`) applies to every call, tested with literal inputs:

* 408/409/429/5xx, deadlines, connection errors and malformed bodies are :class:`TransientError` (retried);
* 400/401/402/403/404/422 (and any other 4xx) become a :class:`~medgspo.judge.config.JudgeFatalError` with a
  hint naming the flag to change (:func:`status_error`); the message never contains the API key (:func:`redact`);
* the wait before a retry is ``Retry-After`` when the provider sends one (seconds, HTTP date or
  ``retry-after-ms``; :func:`parse_retry_after`), else exponential backoff with equal jitter (:func:`backoff_delay`);
* a call has a hard deadline around the whole request (:func:`within`), since a server that keeps the connection
  alive with blank lines never trips an HTTP read timeout.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Mapping
from typing import Any

from medgspo.judge.config import JudgeFatalError

RETRY_STATUS = frozenset({408, 409, 429})
FATAL_HINTS = {
    400: "the request was rejected; check --judge_model, the provider's parameters (try --no_judge_json_mode) and "
    "prompt size",
    401: "authentication failed; check the API key in the environment variable {env}",
    402: "the judge account is out of balance (402 Payment Required); top it up, then resume (the cache keeps "
    "finished verdicts)",
    403: "permission denied for this key or model",
    404: "not found; check --judge_base_url (OpenAI-compatible servers usually end in /v1) and --judge_model",
    422: "the request was rejected as unprocessable; check --judge_model and the provider's parameters",
}
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


class TransientError(Exception):
    """A failed attempt worth retrying; ``retry_after`` is the provider's requested wait in seconds, if any."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def is_retryable(status: int) -> bool:
    """Whether an HTTP error status is worth retrying (timeouts, conflicts, rate limits, server errors).

    >>> [is_retryable(s) for s in (408, 429, 500, 503, 400, 401, 402, 404)]
    [True, True, True, True, False, False, False, False]
    """
    return status in RETRY_STATUS or status >= 500


def status_error(
    status: int, detail: str, headers: Mapping[str, str] | None, *, endpoint: str, api_key_env: str
) -> Exception:
    """A retryable :class:`TransientError` or a :class:`JudgeFatalError` for an HTTP error status.

    ``detail`` is the provider's message, already redacted.

    >>> status_error(503, "busy", {"retry-after": "2"}, endpoint="u", api_key_env="K").retry_after
    2.0
    >>> fatal = status_error(402, "Insufficient Balance", None, endpoint="https://api.x", api_key_env="K")
    >>> type(fatal).__name__, str(fatal).startswith("judge API https://api.x returned HTTP 402: the judge account")
    ('JudgeFatalError', True)
    """
    if is_retryable(status):
        return TransientError(f"HTTP {status}: {detail}", retry_after=parse_retry_after(headers))
    hint = FATAL_HINTS.get(status, "the request was rejected").format(env=api_key_env)
    return JudgeFatalError(f"judge API {endpoint} returned HTTP {status}: {hint}. Provider said: {detail}")


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else ``None``.

    >>> parse_retry_after({"retry-after": "2"}), parse_retry_after({"retry-after-ms": "150"})
    (2.0, 0.15)
    >>> parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"}, now=1445412480.0)
    5.0
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name, "").strip()
        if not value:
            continue
        try:
            return max(float(value) / scale, 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            continue
        return max(when - (time.time() if now is None else now), 0.0)
    return None


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    *,
    base_s: float,
    max_s: float,
    max_retry_after_s: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): ``Retry-After`` when given (plus up to 10% jitter, capped at
    ``max_retry_after_s``), else exponential backoff ``base_s * 2**(attempt-1)`` capped at ``max_s``, with equal
    jitter (between half and all of it).

    >>> class Top(random.Random):
    ...     def random(self): return 1.0  # the top of every jitter range
    >>> [backoff_delay(n, None, base_s=1.0, max_s=30.0, max_retry_after_s=120.0, rng=Top()) for n in (1, 2, 3, 9)]
    [1.0, 2.0, 4.0, 30.0]
    >>> round(backoff_delay(1, 7.0, base_s=1.0, max_s=30.0, max_retry_after_s=120.0, rng=Top()), 6)  # 7 * 1.1
    7.7
    >>> backoff_delay(1, 3600.0, base_s=1.0, max_s=30.0, max_retry_after_s=5.0)
    5.0
    """
    rng = rng or random.Random()
    if retry_after is not None:
        return min(retry_after * (1 + 0.1 * rng.random()), max_retry_after_s)
    cap = min(max_s, base_s * 2 ** (attempt - 1))
    return cap * (0.5 + 0.5 * rng.random())


def redact(text: str, api_key: str | None = None) -> str:
    """``text`` with the API key, and anything shaped like an ``sk-`` key, masked.

    >>> redact("Invalid key abcd1234 and sk-abcdefgh12345678", "abcd1234")
    'Invalid key *** and sk-***'
    """
    if api_key and len(api_key) >= 4:
        text = text.replace(api_key, "***")
    return _KEY_LIKE.sub("sk-***", text)


def provider_message(exc: Any) -> str:
    """The provider's own error message from an SDK status error (``body.error.message``), else its class name."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)
    return str(getattr(exc, "message", "") or type(exc).__name__)


async def within(awaitable: Any, seconds: float) -> Any:
    """Await with a hard deadline (``asyncio.TimeoutError`` past it); ``asyncio.timeout`` spawns no extra task."""
    if hasattr(asyncio, "timeout"):  # Python >= 3.11
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)
