"""The async judge client on the official ``openai`` SDK, for any OpenAI-compatible ``base_url``.

:class:`BaseJudge` turns a batch of items into unique jobs: a completion with no ``</think>`` or an empty answer
is -1.0 without a call, identical answers in a batch are judged once, and batch/run accounting is kept.
:class:`OpenAIJudge` judges the jobs concurrently (a semaphore bounds in-flight calls) and owns:

* a hard per-call deadline (``asyncio.timeout``): DeepSeek keeps slow connections alive with blank lines, so an
  HTTP read timeout alone can hang for minutes;
* retries with exponential backoff and jitter on 408/409/429/5xx, deadlines, connection errors and malformed
  bodies, honouring ``Retry-After`` (seconds, HTTP date or ``retry-after-ms``);
* a bounded number of re-asks when the reply is blank or holds no verdict;
* :class:`~medgspo.judge.JudgeFatalError` on 400/401/402/403/404/422 (no retry; the run stops with a clear
  message, never containing the key);
* the persistent cache (:mod:`.cache`) and the token/latency accounting (:mod:`.accounting`).

Requests go through ``AsyncOpenAI.post`` (the SDK's documented way to send a custom body) with a plain JSON body:
temperature 0, JSON mode, thinking off where the provider supports it. The typed ``chat.completions.create``
re-transforms its parameters on every call, about 1 ms of CPU each on a small machine, which is most of what keeps
a concurrent batch above one call's latency; the raw body also lets us read provider fields
(``reasoning_content``, ``prompt_cache_hit_tokens``) straight from the wire. The SDK's own retries are off
(``max_retries=0``): this module owns them. The SDK's aiohttp transport is used when ``aiohttp`` is installed
(much cheaper than httpx's pool at 64 connections), and calls are launched one at a time so each request is on
the wire before the next is built (see :func:`_gather_or_cancel`).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlparse

from medgspo.judge.accounting import JudgeStats, Judgment, usage_from_response
from medgspo.judge.cache import JudgeCache, cache_key
from medgspo.judge.config import JudgeConfig, JudgeFatalError
from medgspo.judge.parse import parse_verdict
from medgspo.judge.prompt import JudgeItem, build_messages, load_rubric, reask_messages, render_candidate
from medgspo.judge.tiers import TIERS

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429})
FATAL_HINTS = {
    400: "the request was rejected; check --model, the provider's parameters (try --no-json-mode) and prompt size",
    401: "authentication failed; check the API key in the environment variable {env}",
    402: "the judge account is out of balance (402 Payment Required); top it up, then resume (the cache keeps "
    "finished verdicts)",
    403: "permission denied for this key or model",
    404: "not found; check --base-url (OpenAI-compatible servers usually end in /v1) and --model",
    422: "the request was rejected as unprocessable; check --model and the provider's parameters",
}
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")
Progress = Callable[[int], None]


class _Transient(Exception):
    """A failed attempt worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Job:
    """One unique thing to judge: the texts the judge sees and their cache key."""

    question: str
    reference: str
    candidate: str
    key: str


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


def thinking_params(config: JudgeConfig) -> dict[str, Any]:
    """Request fields that turn a provider's thinking off (DeepSeek's ``thinking``; vLLM/SGLang chat templates)."""
    if not config.disable_thinking:
        return {}
    host = (urlparse(config.endpoint).hostname or "").lower()
    if "deepseek" in host:
        return {"thinking": {"type": "disabled"}}
    if config.backend == "local":
        return {"chat_template_kwargs": {"enable_thinking": False}}
    return {}


def request_fields(config: JudgeConfig) -> dict[str, Any]:
    """Everything in the request body except the messages."""
    fields: dict[str, Any] = {"model": config.model, "temperature": 0.0, "max_tokens": config.max_tokens}
    if config.json_mode:
        fields["response_format"] = {"type": "json_object"}
    return fields | thinking_params(config) | dict(config.extra_body)


def message_content(data: dict[str, Any]) -> str | None:
    """The assistant's ``content`` (never ``reasoning_content``); ``None`` when the body has no message."""
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None


class BaseJudge(ABC):
    """Batch bookkeeping shared by all backends: rule-scored items, in-batch de-duplication, accounting."""

    backend = "base"

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.rubric = load_rubric()
        self.stats = JudgeStats()
        self.last_batch: JudgeStats | None = None

    @property
    def judge_id(self) -> str:
        """What the verdicts depend on besides the prompt (the model name)."""
        return self.config.model

    async def judge_batch(
        self, items: list[Any], *, stats: JudgeStats | None = None, progress: Progress | None = None
    ) -> list[Judgment]:
        """Judge ``items`` (dicts or :class:`JudgeItem`) concurrently; one :class:`Judgment` per item, in order.

        ``stats`` (optional) receives this batch's counts as well as the run-level :attr:`stats`; ``progress``
        is called with the number of items finished each time some finish.
        """
        start = time.perf_counter()
        batch = JudgeStats()
        results, groups, jobs = self._plan(items, batch)
        if progress and any(results):
            progress(sum(r is not None for r in results))

        def done(key: str) -> None:
            if progress:
                progress(len(groups[key]))

        try:
            verdicts = await self._judge_jobs(list(jobs.values()), batch, done)
            for key, indices in groups.items():
                results[indices[0]] = verdicts[key]
                batch.record(verdicts[key])
                for i in indices[1:]:
                    results[i] = replace(verdicts[key], cached=True)
                    batch.record(results[i], duplicate=True)
        finally:
            batch.wall_s = time.perf_counter() - start
            for target in (self.stats, stats):
                if target is not None:
                    target.merge(batch)
            self.last_batch = batch
        logger.debug("Judged %d items: %s", len(items), dict(batch.tiers))
        return results  # type: ignore[return-value]  # every slot is filled above

    def _plan(
        self, items: list[Any], batch: JudgeStats
    ) -> tuple[list[Judgment | None], dict[str, list[int]], dict[str, Job]]:
        """Score items with no answer at once (-1.0); group the rest by cache key (identical answers judged once)."""
        results: list[Judgment | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        jobs: dict[str, Job] = {}
        for i, raw in enumerate(items):
            item = JudgeItem.from_mapping(raw)
            answer, rule = item.final_answer()
            if rule is not None:
                results[i] = Judgment(TIERS["E"], "E", reason=rule, source="rule")
                batch.record(results[i])
                continue
            job = self._job(item, answer)
            groups.setdefault(job.key, []).append(i)
            jobs.setdefault(job.key, job)
        return results, groups, jobs

    def _job(self, item: JudgeItem, answer: str) -> Job:
        candidate = render_candidate(answer, self.config.max_answer_chars)
        key = cache_key(self.judge_id, self.rubric.version, item.question.strip(), item.reference.strip(), candidate)
        return Job(item.question, item.reference, candidate, key)

    @abstractmethod
    async def _judge_jobs(
        self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]
    ) -> dict[str, Judgment]:
        """Judge the jobs the cache could not answer; each backend implements it."""

    async def aclose(self) -> None:
        """Release network connections and files."""
        await self._close_http()

    async def _close_http(self) -> None:  # noqa: B027  (a default no-op; the HTTP backend overrides it)
        """Release the connections bound to the current event loop."""

    def judge_batch_sync(self, items: list[Any]) -> list[Judgment]:
        """:meth:`judge_batch` from synchronous code (evaluation scripts); not from inside a running loop."""

        async def run() -> list[Judgment]:
            try:
                return await self.judge_batch(items)
            finally:
                await self._close_http()

        return asyncio.run(run())


class OpenAIJudge(BaseJudge):
    """LLM judge over an OpenAI-compatible chat-completions API. The key lives only inside this object."""

    backend = "openai"

    def __init__(self, config: JudgeConfig, *, api_key: str | None = None):
        super().__init__(config)
        self._api_key = _resolve_key(config, api_key)
        self.cache = JudgeCache(config.cache_path) if config.cache_path else None
        self._fields = request_fields(config)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._sleep = asyncio.sleep  # replaced in tests
        self._rng = random.Random()

    def __repr__(self) -> str:
        cfg = self.config
        return f"OpenAIJudge(model={cfg.model!r}, base_url={cfg.endpoint!r}, concurrency={cfg.concurrency})"

    # ---- batch ---------------------------------------------------------------------------------------------
    async def _judge_jobs(
        self, jobs: list[Job], batch: JudgeStats, done: Callable[[str], None]
    ) -> dict[str, Judgment]:
        verdicts = self.cache.get_many(j.key for j in jobs) if self.cache is not None else {}
        for key in verdicts:
            done(key)

        async def run(job: Job) -> None:
            verdicts[job.key] = await self._judge_job(job, batch)
            done(job.key)

        await _gather_or_cancel([run(job) for job in jobs if job.key not in verdicts])
        return verdicts

    async def _judge_job(self, job: Job, batch: JudgeStats) -> Judgment:
        """Ask until a verdict parses; transient errors are retried, unparseable replies re-asked (both bounded)."""
        cfg = self.config
        base = build_messages(job.question, job.reference, job.candidate, self.rubric)
        messages, failures, reasks = base, 0, 0
        while True:
            try:
                data = await self._call(messages, batch)
            except _Transient as exc:
                failures += 1
                if failures > cfg.max_retries:
                    return self._failed(f"{exc.reason} (gave up after {failures} attempts)")
                batch.retries += 1
                delay = self._backoff(failures, exc.retry_after)
                logger.debug(
                    "Judge call failed (%s); retry %d/%d in %.2f s.", exc.reason, failures, cfg.max_retries, delay
                )
                await self._sleep(delay)
                continue
            content = message_content(data)
            verdict = parse_verdict(content)
            if verdict.score is not None:
                judgment = Judgment(verdict.score, verdict.label, reason=verdict.reason)
                if self.cache is not None:
                    self.cache.put(job.key, judgment, model=self.judge_id, prompt_version=self.rubric.version)
                return judgment
            if reasks >= cfg.max_reasks:
                shown = "blank reply" if not (content or "").strip() else repr(content.strip()[:80])
                return self._failed(f"unparseable verdict: {shown} (after {reasks + 1} replies)")
            reasks += 1
            batch.reasks += 1
            messages = reask_messages(base, content, self.rubric)

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
                raw = await _within(client.post("/chat/completions", body=body, cast_to=bytes), self.config.deadline_s)
            except asyncio.TimeoutError:
                batch.record_call(None, None)
                raise _Transient(f"deadline exceeded: no complete reply within {self.config.deadline_s:g} s") from None
            except openai.APIStatusError as exc:
                batch.record_call(None, None)
                raise self._status_error(exc) from None
            except openai.APIError as exc:  # connection errors, SDK timeouts, invalid responses
                batch.record_call(None, None)
                raise _Transient(f"connection error: {type(exc).__name__}") from None
            latency = time.perf_counter() - start
        try:
            data = _decode(raw)
        except _Transient:
            batch.record_call(None, latency)
            raise
        batch.record_call(usage_from_response(data), latency)
        if not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _Transient("malformed response: no choices in the body")
        return data

    def _status_error(self, exc: Any) -> Exception:
        """A retryable :class:`_Transient` or a :class:`JudgeFatalError` for an HTTP error status."""
        status = int(exc.status_code)
        detail = self._redact(_provider_message(exc))[:300]
        if status in RETRY_STATUS or status >= 500:
            return _Transient(f"HTTP {status}: {detail}", retry_after=parse_retry_after(exc.response.headers))
        hint = FATAL_HINTS.get(status, "the request was rejected").format(env=self.config.api_key_env)
        message = f"judge API {self.config.endpoint} returned HTTP {status}: {hint}. Provider said: {detail}"
        return JudgeFatalError(self._redact(message))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt``: ``Retry-After`` when given (plus up to 10% jitter), else exponential
        backoff with equal jitter, capped."""
        cfg = self.config
        if retry_after is not None:
            return min(retry_after * (1 + 0.1 * self._rng.random()), cfg.max_retry_after_s)
        cap = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
        return cap * (0.5 + 0.5 * self._rng.random())

    def _resources(self) -> tuple[Any, asyncio.Semaphore]:
        """The SDK client and the semaphore of the running event loop (TRL runs async rewards on its own loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._semaphore is None:
            self._client = self._new_client()
            self._semaphore = asyncio.Semaphore(self.config.concurrency)
            self._loop = loop
        return self._client, self._semaphore

    def _new_client(self) -> Any:
        import openai

        n = self.config.concurrency
        options: dict[str, Any] = {"timeout": self.config.deadline_s}
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
            timeout=self.config.deadline_s,
            http_client=http_client,
        )

    def _redact(self, text: str) -> str:
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return _KEY_LIKE.sub("sk-***", text)

    async def _close_http(self) -> None:  # noqa: B027  (a default no-op; the HTTP backend overrides it)
        client, loop = self._client, self._loop
        self._client = self._loop = self._semaphore = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    async def aclose(self) -> None:
        await self._close_http()
        if self.cache is not None:
            self.cache.close()
            self.cache = None


def _resolve_key(config: JudgeConfig, api_key: str | None) -> str:
    key = (api_key if api_key is not None else os.environ.get(config.api_key_env, "")).strip()
    if key:
        return key
    if config.backend == "local":
        return "EMPTY"  # local servers ignore the key; the SDK wants one
    raise JudgeFatalError(
        f"no judge API key: set the environment variable {config.api_key_env} (or name another one with "
        "--api-key-env); use --backend local for a local server or --backend reference to run offline"
    )


def _decode(raw: Any) -> dict[str, Any]:
    """The response body as a JSON object (bytes are decoded by ``json``; no charset sniffing on the hot path)."""
    try:
        data = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    except ValueError:
        raise _Transient("malformed response: body is not JSON") from None
    if not isinstance(data, dict):
        raise _Transient("malformed response: body is not a JSON object")
    return data


def _provider_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)
    return str(getattr(exc, "message", "") or type(exc).__name__)


async def _within(awaitable: Any, seconds: float) -> Any:
    """Await with a hard deadline (``asyncio.TimeoutError`` past it); ``asyncio.timeout`` spawns no extra task."""
    if hasattr(asyncio, "timeout"):  # Python >= 3.11
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


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
