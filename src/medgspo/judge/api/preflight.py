"""Fail fast: check the judge with one tiny request before anything else loads (``judge``, ``gspo``, ``pipeline``,
``eval`` call :func:`preflight` first).

    preflight(judge_config)   # nothing for --judge_backend reference or --no_judge_preflight

The check spends at most two requests and retries nothing:

1. the API key is there (no request; a missing key names its environment variable);
2. a retired DeepSeek name (``deepseek-chat``, ``deepseek-reasoner``) sent to DeepSeek itself stops at once with
   the current name (no request);
3. one tiny chat request with the judge's own request fields (model, JSON mode, thinking off), so a wrong key
   (401/403), no balance (402) and a rejected model or parameter (400/404/422) all show now, not after the policy
   has loaded. On 400/404/422 a second request (``GET /models``) lists what the server serves, so the error names
   the fix: a retired name gets its replacement, an unknown name the served ones;
4. no connection, or no reply within a few seconds, stops the command; 429 and 5xx only warn (the server is
   there; the run's retries handle load).

Every failure is a :class:`~medgspo.judge.config.JudgeFatalError` with one line that never contains the key (the
entry point prints ``error: ...`` and exits 3). Each command checks once, at its start: the pipeline before its
stages (GSPO then runs on the checked config, without a second check), ``medgspo gspo`` before its stage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from medgspo.judge.api.client import request_fields, resolve_key, thinking_params
from medgspo.judge.api.retry import provider_message, redact, status_error, within
from medgspo.judge.config import JudgeConfig, JudgeFatalError
from medgspo.judge.deepseek import is_deepseek_host, retired_message, retired_replacement

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
MAX_WAIT_S = 30.0
MODEL_STATUSES = frozenset({400, 404, 422})  # a rejected model name or parameter: worth asking what is served
PROBE_MESSAGES = [
    {"role": "system", "content": "You check that a judge API works. Reply with json only."},
    {"role": "user", "content": 'Reply with this json: {"ok": true}'},
]


def preflight(config: JudgeConfig) -> None:
    """Check the judge ``config`` describes (see the module docstring); raises ``JudgeFatalError``."""
    if config.judge_backend == "reference" or not config.judge_preflight:
        return
    check_judge(config)


def check_judge(config: JudgeConfig, *, api_key: str | None = None) -> str | None:
    """One tiny request to the judge of ``config``; returns what it found in words (``None`` for ``reference``)."""
    if config.judge_backend == "reference":
        return None
    url = config.endpoint.rstrip("/")
    if retired_replacement(config.model) and is_deepseek_host(url):
        raise JudgeFatalError(retired_message(config.model))
    key = resolve_key(config, api_key)
    wait_s = min(config.judge_deadline_s, MAX_WAIT_S)
    start = time.perf_counter()
    message = asyncio.run(_probe(config, url, key, wait_s))
    if message is None:
        return "answered with a status the run retries"
    if (message.get("reasoning_content") or message.get("reasoning")) and thinking_params(config):
        logger.warning(
            "The judge %s at %s returned its thinking although the request turned thinking off: every verdict pays "
            "for those tokens and takes longer. Check the provider's thinking switch (extra_body).",
            config.model,
            url,
        )
    found = f"judge {config.model} at {url} answered in {time.perf_counter() - start:.1f} s"
    logger.info("Judge check: %s.", found)
    return found


async def _probe(config: JudgeConfig, url: str, key: str, wait_s: float) -> dict[str, Any] | None:
    """The tiny chat request under a hard deadline (a server that sends keep-alive blank lines never trips a read
    timeout), and ``GET /models`` after a 400/404/422; the reply's message, or ``None`` after a 429/5xx."""
    import openai

    timeout = openai.Timeout(wait_s, connect=CONNECT_TIMEOUT_S)
    body = {**request_fields(config), "max_tokens": 16, "messages": PROBE_MESSAGES}
    async with openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=0, timeout=timeout) as client:
        try:
            raw = await within(client.post("/chat/completions", body=body, cast_to=bytes), wait_s)
        except asyncio.TimeoutError:
            raise JudgeFatalError(_unreachable(url, f"no complete reply within {wait_s:g} s")) from None
        except openai.APITimeoutError:
            raise JudgeFatalError(_unreachable(url, f"no reply within {wait_s:g} s")) from None
        except openai.APIConnectionError:
            raise JudgeFatalError(_unreachable(url, "connection failed")) from None
        except openai.APIStatusError as exc:
            status, detail = int(exc.status_code), _detail(exc)
            if status in MODEL_STATUSES:
                served = await _served_models(client)
                raise JudgeFatalError(redact(_rejected(config, url, status, detail, served), key)) from None
            headers = getattr(getattr(exc, "response", None), "headers", None)
            error = status_error(status, detail, headers, endpoint=url, api_key_env=config.judge_api_key_env)
            if isinstance(error, JudgeFatalError):
                raise JudgeFatalError(redact(str(error), key)) from None
            logger.warning("Judge check: %s answered HTTP %d; going on (the run retries these).", url, status)
            return None
    return _reply_message(raw, url)


def _unreachable(url: str, why: str) -> str:
    return (
        f"cannot reach the judge at {url} ({why}): start the server or fix --judge_base_url "
        "(OpenAI-compatible servers usually end in /v1), or use --judge_backend reference to run offline"
    )


def _rejected(config: JudgeConfig, url: str, status: int, detail: str, served: list[str] | None) -> str:
    """The one-line error for a 400/404/422 to the tiny request, naming the fix when the model is the cause."""
    said = f"HTTP {status}: {detail}"
    if served is not None and config.model not in served:
        if retired_replacement(config.model):
            return f"{retired_message(config.model)} ({url} answered {said})"
        listing = ", ".join(served[:12]) + (" ..." if len(served) > 12 else "") if served else "nothing"
        return (
            f"judge model {config.model!r} is not served by {url} ({said}); it serves: {listing}. "
            "Set --judge_model to one of them"
        )
    if served is None and retired_replacement(config.model):
        return f"{retired_message(config.model)} ({url} answered {said})"
    return str(status_error(status, detail, None, endpoint=url, api_key_env=config.judge_api_key_env))


async def _served_models(client: Any) -> list[str] | None:
    """The model ids of ``GET /models`` (the second and last request), or ``None`` when there is no such list."""
    import openai

    try:
        data = json.loads(await within(client.get("/models", cast_to=bytes), 10.0))
    except (openai.APIError, ValueError, asyncio.TimeoutError):
        return None
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return None
    return [str(r["id"]) for r in rows if isinstance(r, dict) and r.get("id")]


def _reply_message(raw: Any, url: str) -> dict[str, Any]:
    """The assistant message of a 200 reply; a reply that is not a chat completion stops the run."""
    try:
        message = json.loads(raw)["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        message = None
    if not isinstance(message, dict):
        raise JudgeFatalError(
            f"the judge at {url} answered HTTP 200 but not with a chat completion; check --judge_base_url "
            "(OpenAI-compatible servers usually end in /v1)"
        )
    return message


def _detail(exc: Any) -> str:
    """The provider's error message of an SDK status error (``error.message``), else the start of the body."""
    message = provider_message(exc)
    if message and message != type(exc).__name__:
        return message[:300]
    text = getattr(getattr(exc, "response", None), "text", "") or ""
    return text.strip()[:200] or "no message"
