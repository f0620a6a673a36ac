"""The LLM judge client (backends ``openai`` and ``local``) on the official ``openai`` SDK, for any
OpenAI-compatible ``base_url``; built by :func:`medgspo.judge.make_judge`.

:class:`OpenAIJudge` judges the unique jobs of a batch (:mod:`.base` plans them and answers what the cache holds)
concurrently, a semaphore bounding the calls in flight, and owns:

* a hard per-call deadline (``asyncio.timeout``): DeepSeek keeps slow connections alive with blank lines, so an
  HTTP read timeout alone can hang for minutes;
* retries with exponential backoff and jitter on 408/409/429/5xx, deadlines, connection errors and malformed
  bodies, honouring ``Retry-After`` (the policy is :mod:`.retry`);
* a bounded number of re-asks when the reply is blank or holds no verdict;
* :class:`~medgspo.judge.JudgeFatalError` on 400/401/402/403/404/422 (no retry; the run stops with a clear
  message, never containing the key).

Requests go through ``AsyncOpenAI.post`` (the SDK's documented way to send a custom body) with a plain JSON body:
temperature 0, JSON mode, thinking off for DeepSeek models (by host or by name) and local servers. The typed ``chat.completions.create``
re-transforms its parameters on every call, about 1 ms of CPU each on a small machine, which is most of what keeps
a concurrent batch above one call's latency; the raw body also lets us read provider fields
(``reasoning_content``, ``prompt_cache_hit_tokens``) straight from the wire. The SDK's own retries are off
(``max_retries=0``): this module owns them. The SDK's aiohttp transport is used when ``aiohttp`` is installed
(much cheaper than httpx's pool at 64 connections), and calls are launched one at a time so each request is on
the wire before the next is built (see :func:`_gather_or_cancel`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from medgspo.judge.api.accounting import JudgeStats, Judgment, usage_from_response
from medgspo.judge.api.base import BaseJudge, Job
from medgspo.judge.api.retry import (
    TransientError,
    backoff_delay,
    provider_message,
    redact,
    status_error,
    within,
)
from medgspo.judge.config import JudgeConfig, JudgeFatalError
from medgspo.judge.deepseek import (
    THINKING_OFF,
    is_deepseek_host,
    is_deepseek_model,
    retired_message,
    retired_replacement,
)
from medgspo.judge.rubric.parse import parse_verdict
from medgspo.judge.rubric.prompt import build_messages, reask_messages
from medgspo.judge.rubric.tiers import label_for

logger = logging.getLogger(__name__)


def thinking_params(config: JudgeConfig) -> dict[str, Any]:
    """Request fields that turn a provider's thinking off: DeepSeek's ``thinking`` for a DeepSeek model or host
    (a DeepSeek model behind a proxy or a local gateway is still DeepSeek), the chat-template switch for a local
    server (vLLM, SGLang: Qwen3's ``enable_thinking``, DeepSeek-V3.1's ``thinking``).

    >>> thinking_params(JudgeConfig(judge_backend="openai", judge_base_url="http://127.0.0.1:9000/v1"))
    {'thinking': {'type': 'disabled'}}
    >>> thinking_params(JudgeConfig(judge_backend="local", judge_model="Qwen/Qwen3-32B"))
    {'chat_template_kwargs': {'enable_thinking': False}}
    """
    if config.judge_thinking:
        return {}
    deepseek = is_deepseek_host(config.endpoint) or is_deepseek_model(config.model)
    fields: dict[str, Any] = dict(THINKING_OFF) if deepseek else {}
    if config.judge_backend == "local":
        switches = {"enable_thinking": False} | ({"thinking": False} if deepseek else {})
        fields["chat_template_kwargs"] = switches
    return fields


def request_fields(config: JudgeConfig) -> dict[str, Any]:
    """Everything in the request body except the messages."""
    fields: dict[str, Any] = {"model": config.model, "temperature": 0.0, "max_tokens": config.judge_max_tokens}
    if config.judge_json_mode:
        fields["response_format"] = {"type": "json_object"}
    return fields | thinking_params(config) | dict(config.judge_extra_body or {})


def message_content(data: dict[str, Any]) -> str | None:
    """The assistant's ``content``; a provider's thinking (DeepSeek's ``reasoning_content``, vLLM's ``reasoning``)
    is never read. ``None`` when the body has no message.

    >>> message_content({"choices": [{"message": {"content": "A", "reasoning_content": "B", "reasoning": "C"}}]})
    'A'
    >>> message_content({"choices": [{"message": {"content": None, "reasoning": '{"label": "A"}'}}]}) is None
    True
    >>> message_content({"choices": []}) is None
    True
    """
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts; "thinking"/"reasoning" parts are not the answer
        texts = [p for p in content if isinstance(p, dict) and p.get("type", "text") in ("text", "output_text")]
        content = "".join(str(p.get("text", "")) for p in texts)
    return content if isinstance(content, str) else None


class OpenAIJudge(BaseJudge):
    """LLM judge over an OpenAI-compatible chat-completions API. The key lives only inside this object."""

    backend = "openai"

    def __init__(self, config: JudgeConfig, *, api_key: str | None = None):
        super().__init__(config)
        self._api_key = resolve_key(config, api_key)
        self._fields = request_fields(config)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._sleep = asyncio.sleep  # replaced in tests
        self._rng = random.Random()

    def __repr__(self) -> str:
        cfg = self.config
        return f"OpenAIJudge(model={cfg.model!r}, base_url={cfg.endpoint!r}, concurrency={self.concurrency})"

    # ---- batch ---------------------------------------------------------------------------------------------
    async def _judge_new(self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]) -> dict[str, Judgment]:
        verdicts: dict[str, Judgment] = {}

        async def run(job: Job) -> None:
            verdicts[job.key] = await self._judge_job(job, batch)
            done(job.key)

        await _gather_or_cancel([run(job) for job in jobs])
        return verdicts

    async def _judge_job(self, job: Job, batch: JudgeStats) -> Judgment:
        """Ask until a verdict parses; transient errors are retried, unparseable replies re-asked (both bounded)."""
        cfg = self.config
        base = build_messages(job.question, job.reference, job.candidate, self.rubric)
        messages, failures, reasks = base, 0, 0
        while True:
            try:
                data = await self._call(messages, batch)
            except TransientError as exc:
                failures += 1
                if failures > cfg.judge_max_retries:
                    return self._failed(f"{exc.reason} (gave up after {failures} attempts)")
                batch.retries += 1
                delay = self._backoff(failures, exc.retry_after)
                logger.debug(
                    "Judge call failed (%s); retry %d/%d in %.2f s.",
                    exc.reason,
                    failures,
                    cfg.judge_max_retries,
                    delay,
                )
                await self._sleep(delay)
                continue
            content = message_content(data)
            verdict = parse_verdict(content)
            if verdict.score is not None:
                judgment = Judgment(verdict.score, verdict.label, reason=verdict.reason)
                self._remember(job, judgment)
                return judgment
            if reasks >= cfg.judge_max_reasks:
                shown = "blank reply" if not (content or "").strip() else repr(content.strip()[:80])
                return self._unparsed(f"unparseable verdict: {shown} (after {reasks + 1} replies)")
            reasks += 1
            batch.reasks += 1
            messages = reask_messages(base, content, self.rubric)

    def _unparsed(self, error: str) -> Judgment:
        """The judge replied but never parsably: the configured floor (default the E tier), counted apart from
        transport failures; a reply a policy makes the judge babble is no hiding place at its group's mean."""
        floor = self.config.judge_unparsed_score
        if floor is None:
            return self._failed(error)
        logger.warning("Judge reply never parsed, scored the floor %+.1f: %s", floor, self._redact(error))
        return Judgment(floor, label_for(floor), reason=self._redact(error), source="floor")

    def _failed(self, error: str) -> Judgment:
        error = self._redact(error)
        logger.warning("Judgment failed, scored None: %s", error)
        return Judgment(None, error=error)

    # ---- one HTTP call -------------------------------------------------------------------------------------
    async def _call(self, messages: list[dict], batch: JudgeStats) -> dict[str, Any]:
        """One request under the semaphore and the hard deadline; returns the decoded body."""
        import openai

        client, semaphore = self._resources()
        body = {**self._fields, "messages": messages}
        async with semaphore:
            start = time.perf_counter()
            try:
                raw = await within(
                    client.post("/chat/completions", body=body, cast_to=bytes), self.config.judge_deadline_s
                )
            except asyncio.TimeoutError:
                batch.record_call(None, None)
                raise TransientError(
                    f"deadline exceeded: no complete reply within {self.config.judge_deadline_s:g} s"
                ) from None
            except openai.APIStatusError as exc:
                batch.record_call(None, None)
                raise self._status_error(exc) from None
            except openai.APIError as exc:  # connection errors, SDK timeouts, invalid responses
                batch.record_call(None, None)
                raise TransientError(f"connection error: {type(exc).__name__}") from None
            latency = time.perf_counter() - start
        try:
            data = _decode(raw)
        except TransientError:
            batch.record_call(None, latency)
            raise
        batch.record_call(usage_from_response(data), latency)
        if not isinstance(data.get("choices"), list) or not data["choices"]:
            raise TransientError("malformed response: no choices in the body")
        return data

    def _status_error(self, exc: Any) -> Exception:
        """A retryable :class:`TransientError` or a :class:`JudgeFatalError` for an SDK status error."""
        detail = self._redact(provider_message(exc))[:300]
        headers = getattr(getattr(exc, "response", None), "headers", None)
        error = status_error(
            int(exc.status_code),
            detail,
            headers,
            endpoint=self.config.endpoint,
            api_key_env=self.config.judge_api_key_env,
        )
        if not isinstance(error, JudgeFatalError):
            return error
        if int(exc.status_code) in (400, 404, 422) and retired_replacement(self.config.model):
            return JudgeFatalError(f"{retired_message(self.config.model)} (HTTP {exc.status_code}: {detail})")
        return JudgeFatalError(self._redact(str(error)))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt`` (:func:`~medgspo.judge.api.retry.backoff_delay` with this config)."""
        cfg = self.config
        return backoff_delay(
            attempt,
            retry_after,
            base_s=cfg.judge_backoff_base_s,
            max_s=cfg.judge_backoff_max_s,
            max_retry_after_s=cfg.judge_max_retry_after_s,
            rng=self._rng,
        )

    def _resources(self) -> tuple[Any, asyncio.Semaphore]:
        """The SDK client and the semaphore of the running event loop (TRL runs async rewards on its own loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._semaphore is None:
            self._client = self._new_client()
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._semaphore

    def _new_client(self) -> Any:
        import openai

        n = self.concurrency
        options: dict[str, Any] = {"timeout": self.config.judge_deadline_s}
        base = getattr(openai, "DEFAULT_CONNECTION_LIMITS", None)
        if base is not None:  # keep connections across GSPO steps, which are often longer than the 5 s default
            options["limits"] = type(base)(
                max_connections=max(base.max_connections or 0, n), max_keepalive_connections=n, keepalive_expiry=60.0
            )
        try:  # aiohttp transport: far less per-request CPU than httpx's pool at high concurrency
            http_client = openai.DefaultAioHttpClient(**options)
        except (AttributeError, ImportError, RuntimeError, TypeError):
            http_client = None
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.config.endpoint,
            max_retries=0,
            timeout=self.config.judge_deadline_s,
            http_client=http_client,
        )

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    async def _close_http(self) -> None:
        client, loop = self._client, self._loop
        self._client = self._loop = self._semaphore = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()


def resolve_key(config: JudgeConfig, api_key: str | None) -> str:
    """The API key: ``api_key`` if given, else the environment variable ``config.judge_api_key_env`` (``local``: any)."""
    key = (api_key if api_key is not None else os.environ.get(config.judge_api_key_env, "")).strip()
    if key:
        return key
    if config.judge_backend == "local":
        return "EMPTY"  # local servers ignore the key; the SDK wants one
    raise JudgeFatalError(
        f"no judge API key: set the environment variable {config.judge_api_key_env} (or name another one with "
        "--judge_api_key_env); use --judge_backend local for a local server or --judge_backend reference to run "
        "offline"
    )


def _decode(raw: Any) -> dict[str, Any]:
    """The response body as a JSON object (bytes are decoded by ``json``; no charset sniffing on the hot path)."""
    try:
        data = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    except ValueError:
        raise TransientError("malformed response: body is not JSON") from None
    if not isinstance(data, dict):
        raise TransientError("malformed response: body is not a JSON object")
    return data


async def _gather_or_cancel(coros: list[Any]) -> None:
    """Run coroutines concurrently; on the first exception (a fatal judge error) cancel the rest and re-raise.

    Tasks are started one at a time with a yield in between, so each request reaches the wire (aiohttp writes the
    body in a task of its own) before the next one is built. Started all at once, every request would be built
    before the first body is sent and all replies would arrive, and queue for the CPU, together.
    """
    tasks: list[asyncio.Future] = []
    failed: list[asyncio.Future] = []
    pending = iter(coros)
    try:
        for coro in pending:
            task = asyncio.ensure_future(coro)
            task.add_done_callback(lambda t: failed.append(t) if not t.cancelled() and t.exception() else None)
            tasks.append(task)
            await asyncio.sleep(0)
            if failed:  # stop launching; gather re-raises below
                break
        await asyncio.gather(*tasks)
    except BaseException:
        for coro in pending:
            coro.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
