"""The two generation routes of ``medgspo serve``: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

    endpoints = Endpoints(engine, config, batcher)
    app.router.add_post("/v1/chat/completions", endpoints.chat_completions)
    app.router.add_post("/v1/completions", endpoints.completions)

Each request becomes one batcher job per choice (``n`` per prompt; ``/v1/completions`` may send several prompts),
all queued or none (503 with ``Retry-After``), and the answer is sent whole or as server-sent events, choice by
choice as the tokens come. The wire formats are :mod:`medgspo.serve.chat_protocol` and
:mod:`medgspo.serve.text_protocol`; checks they share (sampling ranges, context length) are
:mod:`medgspo.serve.protocol`. aiohttp is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from medgspo.modeling.generation import SEED_RANGE
from medgspo.serve.batcher import Batcher, Job, QueueFull
from medgspo.serve.channel import ClientGone, JobChannel
from medgspo.serve.chat_protocol import chat_body, chunk_body, logprobs_body, parse_chat_request
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine, GenerationResult
from medgspo.serve.protocol import APIError, Generation, fit_context, sse, usage
from medgspo.serve.streaming import THINKING, ThinkSplitter
from medgspo.serve.text_protocol import (
    CompletionRequest,
    legacy_logprobs,
    parse_completion_request,
    text_body,
    text_choice,
)

logger = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class Endpoints:
    """The generation route handlers of one app."""

    def __init__(
        self, engine: ChatEngine, config: ServerConfig, batcher: Batcher, read_json: Callable[[Any], Any]
    ) -> None:
        self.engine, self.config, self.batcher, self.read_json = engine, config, batcher, read_json

    # ---- /v1/chat/completions -------------------------------------------------------------------------------------
    async def chat_completions(self, request):
        from jinja2 import TemplateError

        chat = parse_chat_request(await self.read_json(request), self.config)
        try:
            prompt_ids, opens_thinking = self.engine.encode(chat.messages, chat.template_kwargs)
        except (TemplateError, ValueError) as exc:  # the chat template rejects the conversation
            raise APIError(400, f"The chat template rejected the messages: {exc}", param="messages") from None
        fit_context(chat.params, len(prompt_ids), self.config)
        jobs = choice_jobs(prompt_ids, chat.params, opens_thinking=opens_thinking, logprobs=chat.logprobs)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        with self._submit(jobs, chat.params.stream) as channel:
            if chat.params.stream:
                response = await _prepare(request)
                await self._guard(
                    completion_id, response, self._stream_chat(request, response, chat, completion_id, channel)
                )
                return response
            results = await self._results(request, completion_id, channel)
            if results is None:
                return json_response({}, 499)
            return json_response(chat_body(completion_id, self.config.model_id, results, self.engine.describe_token))

    async def _stream_chat(self, request, response, chat, completion_id: str, channel: JobChannel) -> None:
        chunk = partial(chunk_body, completion_id, self.config.model_id)
        splitters = [ThinkSplitter(start_in_thinking=job.opens_thinking) for job in channel.jobs]
        logprobs: list[list] = [[] for _ in channel.jobs]
        results = []
        for index in range(len(channel.jobs)):
            await response.write(sse(chunk(index, {"role": "assistant", "content": ""})))
        async for index, item in channel.items(partial(_client_gone, request)):
            if isinstance(item, list):
                logprobs[index] += item
                continue
            events = splitters[index].flush() if isinstance(item, GenerationResult) else splitters[index].feed(item)
            for kind, text in events:
                key = "reasoning_content" if kind == THINKING else "content"
                await response.write(sse(chunk(index, {key: text}, logprobs=self._chat_logprobs(logprobs[index]))))
                logprobs[index] = []
            if isinstance(item, GenerationResult):
                results.append(item)
                final = chunk(index, {}, item.finish_reason, logprobs=self._chat_logprobs(logprobs[index]))
                await response.write(sse(final))
        if chat.params.include_usage:
            body = chunk(0, {})
            await response.write(sse({**body, "choices": [], "usage": usage(results)}))
        await response.write(sse("[DONE]"))

    def _chat_logprobs(self, entries: list) -> dict | None:
        return logprobs_body(entries, self.engine.describe_token) if entries else None

    # ---- /v1/completions ------------------------------------------------------------------------------------------
    async def completions(self, request):
        completion = parse_completion_request(await self.read_json(request), self.config)
        prompts = [p if isinstance(p, list) else self.engine.encode_text(p) for p in completion.prompts]
        jobs = []
        for ids in prompts:
            params = dataclasses.replace(completion.params, options=dataclasses.replace(completion.params.options))
            fit_context(params, len(ids), self.config)
            scoring = completion.logprobs if completion.echo else None
            jobs += choice_jobs(
                ids, params, opens_thinking=False, logprobs=completion.logprobs, prompt_logprobs=scoring
            )
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        echoes = [
            self._echo(c, ids) if completion.echo else "" for c, ids in zip(completion.prompts, prompts, strict=True)
        ]
        n = completion.params.n
        with self._submit(jobs, completion.params.stream) as channel:
            if completion.params.stream:
                response = await _prepare(request)
                run = self._stream_text(request, response, completion, completion_id, channel, echoes, prompts)
                await self._guard(completion_id, response, run)
                return response
            results = await self._results(request, completion_id, channel)
            if results is None:
                return json_response({}, 499)
            choices = [
                text_choice(
                    i, echoes[i // n] + r.text, r.finish_reason, self._text_logprobs(completion, r, prompts[i // n])
                )
                for i, r in enumerate(results)
            ]
            tokens = {"prompt_tokens": sum(map(len, prompts))}
            counted = usage(results, tokens["prompt_tokens"])
            return json_response(text_body(completion_id, self.config.model_id, choices, counted))

    def _echo(self, prompt: str | list[int], ids: list[int]) -> str:
        return prompt if isinstance(prompt, str) else self.engine.tokenizer.decode(ids)

    def _text_logprobs(
        self, completion: CompletionRequest, result: GenerationResult, prompt: list[int]
    ) -> dict | None:
        """The legacy logprobs of a choice: its prompt's tokens first with ``echo`` (the first has none)."""
        if completion.logprobs is None:
            return None
        ids, entries = list(result.token_ids), list(result.logprobs or [])
        if completion.echo:
            ids, entries = [*prompt, *ids], [*(result.prompt_logprobs or [None] * len(prompt)), *entries]
        return legacy_logprobs(ids[: len(entries)], entries, self.engine.describe_token)

    async def _stream_text(self, request, response, completion, completion_id: str, channel, echoes, prompts) -> None:
        n = completion.params.n
        body = partial(text_body, completion_id, self.config.model_id)
        logprobs: list[list] = [[] for _ in channel.jobs]
        results = []
        for index in range(len(channel.jobs)):
            if echoes[index // n]:
                await response.write(sse(body([text_choice(index, echoes[index // n], None)], None)))
        async for index, item in channel.items(partial(_client_gone, request)):
            if isinstance(item, list):
                logprobs[index] += item
            elif isinstance(item, str):
                entries, logprobs[index] = logprobs[index], []
                lp = (
                    legacy_logprobs([e.token_id for e in entries], entries, self.engine.describe_token)
                    if entries
                    else None
                )
                await response.write(sse(body([text_choice(index, item, None, lp)], None)))
            else:
                results.append(item)
                await response.write(sse(body([text_choice(index, "", item.finish_reason)], None)))
        if completion.params.include_usage:
            await response.write(sse(body([], usage(results, sum(map(len, prompts))))))
        await response.write(sse("[DONE]"))

    # ---- shared -------------------------------------------------------------------------------------------------------
    def _submit(self, jobs: list[Job], stream: bool) -> _Submitted:
        try:
            return _Submitted(JobChannel(self.batcher, jobs, stream=stream))
        except QueueFull as full:
            message = f"The server is busy; retry after {full.retry_after} s."
            headers = {"Retry-After": str(full.retry_after)}
            raise APIError(503, message, type="server_error", code="server_busy", headers=headers) from None

    async def _results(self, request, completion_id: str, channel: JobChannel) -> list[GenerationResult] | None:
        try:
            return await channel.results(partial(_client_gone, request))
        except ClientGone:
            logger.info("Client went away while waiting for %s; its generation was cancelled.", completion_id)
            return None

    @staticmethod
    async def _guard(completion_id: str, response, run) -> None:
        """Run a streaming writer; a client that went away or a failed generation ends the stream, not the server."""
        try:
            await run
        except ConnectionError:  # aiohttp's write error on a closed connection, or ClientGone
            logger.info("Client went away during %s; its generation was cancelled.", completion_id)
        except Exception:
            logger.exception("Generation failed during %s", completion_id)
            await _write_quietly(response, sse(APIError(500, "Generation failed.", type="server_error").body()))


class _Submitted:
    """A submitted channel as a context manager: leaving it cancels what has not ended."""

    def __init__(self, channel: JobChannel) -> None:
        self.channel = channel

    def __enter__(self) -> JobChannel:
        return self.channel

    def __exit__(self, *exc: Any) -> None:
        self.channel.close()


def choice_jobs(
    prompt_ids: list[int],
    params: Generation,
    *,
    opens_thinking: bool,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> list[Job]:
    """``params.n`` jobs for one prompt. With a ``seed``, choice ``i`` samples with ``seed + i`` (wrapping within
    torch's seed range), so the choices differ and each is reproducible."""
    jobs = []
    for i in range(params.n):
        options = params.options
        if options.seed is not None and i:
            low, high = SEED_RANGE
            options = dataclasses.replace(options, seed=(options.seed + i - low) % (high - low + 1) + low)
        job = Job(prompt_ids, options, params.stop, opens_thinking=opens_thinking, rules=params.rules)
        job.logprobs, job.prompt_logprobs = logprobs, prompt_logprobs
        jobs.append(job)
    return jobs


async def _prepare(request):
    from aiohttp import web

    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    return response


def _client_gone(request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write_quietly(response, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError:
        pass


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    """A JSON response with Chinese text as it is (not ``\\u`` escapes); every route of the app answers with it."""
    import json

    from aiohttp import web

    return web.json_response(data, status=status, headers=headers, dumps=partial(json.dumps, ensure_ascii=False))
