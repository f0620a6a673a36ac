"""``medgspo serve``: an OpenAI-compatible chat-completions API and a web page for one model (aiohttp).

    medgspo serve --model Qwen/Qwen3.5-4B --adapter runs/sft/adapter --port 8000
    MEDGSPO_API_KEY=secret medgspo serve --api-key-env MEDGSPO_API_KEY

Routes: ``GET /`` (the web page), ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}`` and
``POST /v1/chat/completions`` (``stream`` true or false). The reasoning comes back in ``message.reasoning_content``
(stream: ``delta.reasoning_content``) and the answer in ``message.content``, the DeepSeek / vLLM convention.
Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``. One generation runs at a time
(the model is not thread-safe); other requests wait in a bounded line (503 when it is full).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from medgspo.serve.chat import ChatEngine, GenerationResult, OptionError, SamplingOptions, add_model_arguments
from medgspo.serve.streaming import THINKING, ThinkSplitter, prompt_opens_thinking, split_text
from medgspo.utils.paths import RESOURCES

logger = logging.getLogger(__name__)

WEB_PAGE = RESOURCES / "web" / "index.html"
ROLES = ("system", "developer", "user", "assistant")
_DONE = object()


@dataclass
class ServerConfig:
    """What one server serves and its limits."""

    model_id: str
    api_key: str | None = None
    max_tokens_limit: int = 1024
    max_body_bytes: int = 1 << 20
    max_queue: int = 32


class APIError(Exception):
    """An error returned to the client as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---- request parsing (pure) -------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    messages: list[dict[str, str]]
    options: SamplingOptions
    stream: bool = False
    include_usage: bool = False


def parse_chat_request(body: Any, config: ServerConfig) -> ChatRequest:
    """Validate a request body; ``APIError`` (400/404) names the offending parameter.

    A missing ``model`` means the served one; another name is ``404 model_not_found``. Parameters this server does
    not implement (``stop``, ``tools``, ``logprobs``, ...) are ignored, except ``n`` other than 1.
    """
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and model != config.model_id:
        raise APIError(404, f"The model `{model}` does not exist; this server serves `{config.model_id}`.",
                       param="model", code="model_not_found")  # fmt: skip
    if _get(body, "n", int, 1) != 1:
        raise APIError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    defaults = SamplingOptions(max_new_tokens=config.max_tokens_limit)
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _get(body, max_name, int, None)
    top_k = _get(body, "top_k", int, defaults.top_k)
    options = SamplingOptions(
        temperature=float(_get(body, "temperature", float, defaults.temperature)),
        top_p=float(_get(body, "top_p", float, defaults.top_p)),
        top_k=0 if top_k == -1 else top_k,  # vLLM's "-1 = off"
        max_new_tokens=max_tokens if max_tokens is not None else defaults.max_new_tokens,
        seed=_get(body, "seed", int, None),
    )
    names = {"max_new_tokens": max_name}
    try:
        options.validate(name=lambda field: names.get(field, field))
    except OptionError as exc:
        raise APIError(400, str(exc), param=names.get(exc.field, exc.field), code="invalid_value") from None
    if options.max_new_tokens > config.max_tokens_limit:
        raise APIError(400, f"{max_name} must be <= {config.max_tokens_limit} on this server (got "
                       f"{options.max_new_tokens}).", param=max_name, code="invalid_value")  # fmt: skip
    stream = bool(_get(body, "stream", bool, False))
    stream_options = _get(body, "stream_options", dict, {})
    include_usage = stream_options.get("include_usage") is True
    return ChatRequest(parse_messages(body.get("messages")), options, stream, include_usage)


def parse_messages(messages: Any) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` messages from OpenAI's format (string content or a list of text parts)."""
    if messages is None:
        raise APIError(
            400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array.", param="messages", code="invalid_value")
    parsed = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{where} must be an object.", param=where, code="invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise APIError(400, f"{where}.role must be one of {', '.join(ROLES)} (got {role!r}).",
                           param=f"{where}.role", code="invalid_value")  # fmt: skip
        parsed.append({"role": "system" if role == "developer" else role, "content": _text(message, where)})
    if parsed[-1]["role"] != "user" or not parsed[-1]["content"].strip():
        raise APIError(400, "The last message must be a non-empty user message.", param=f"messages[{len(parsed) - 1}]",
                       code="invalid_value")  # fmt: skip
    return parsed


def _text(message: dict[str, Any], where: str) -> str:
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
    raise APIError(400, f"{where}.content must be a string or a list of text parts.", param=f"{where}.content",
                   code="invalid_type")  # fmt: skip


def _get(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """``body[name]`` checked against ``kind`` (ints count as floats, bools never as numbers); null = absent."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        type_name = {int: "an integer", float: "a number", bool: "a boolean", dict: "an object"}[kind]
        raise APIError(400, f"'{name}' must be {type_name} (got {json.dumps(value)[:40]}).", param=name,
                       code="invalid_type")  # fmt: skip
    return value


# ---- response bodies (pure) -------------------------------------------------------------------------------------
def completion_body(completion_id: str, model_id: str, result: GenerationResult) -> dict[str, Any]:
    """A ``chat.completion`` object; reasoning in ``reasoning_content``, answer in ``content``."""
    thinking, answer = split_text(result.text, start_in_thinking=result.opens_thinking)
    message = {"role": "assistant", "content": answer, "reasoning_content": thinking}
    choice = {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model_id,
            "choices": [choice], "usage": usage(result)}  # fmt: skip


def chunk_body(completion_id: str, model_id: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict:
    """One ``chat.completion.chunk`` of a stream."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_id,
            "choices": [choice]}  # fmt: skip


def usage(result: GenerationResult) -> dict[str, int]:
    total = result.prompt_tokens + result.completion_tokens
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": total,
    }


def sse(data: Any) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line (``[DONE]`` as is)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


# ---- the generation line ----------------------------------------------------------------------------------------
class GenerationLine:
    """Runs generations one at a time on a dedicated thread; at most ``max_queue`` requests wait for their turn."""

    def __init__(self, engine: ChatEngine, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.in_line = 0  # waiting + running
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medgspo-generate")

    async def complete(self, messages: list[dict[str, str]], options: SamplingOptions) -> GenerationResult:
        """Generate one whole completion."""
        async with self._turn():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, partial(self.engine.generate, messages, options))

    async def stream(self, messages: list[dict[str, str]], options: SamplingOptions) -> AsyncIterator[Any]:
        """Yield raw text pieces as they are decoded, then the :class:`GenerationResult`.

        Closing the iterator early (the client went away) stops the generation after the current token.
        """
        async with self._turn():
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            stop = threading.Event()
            on_text = partial(loop.call_soon_threadsafe, queue.put_nowait)
            job = partial(self.engine.generate, messages, options, on_text, stop.is_set)
            future = loop.run_in_executor(self._executor, job)
            future.add_done_callback(lambda _: queue.put_nowait(_DONE))
            try:
                while (piece := await queue.get()) is not _DONE:
                    yield piece
                yield future.result()
            finally:
                stop.set()
                await asyncio.shield(asyncio.wait([future]))  # the model stays busy until generate() returns

    def _turn(self):
        if self.in_line > self.max_queue:
            raise APIError(503, "The server is busy; try again shortly.", type="server_error", code="server_busy")
        return _InLine(self)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _InLine:
    """Counts a request as in line while it waits for and holds the generation lock."""

    def __init__(self, line: GenerationLine) -> None:
        self.line = line

    async def __aenter__(self) -> None:
        self.line.in_line += 1
        try:
            await self.line._lock.acquire()
        except BaseException:
            self.line.in_line -= 1
            raise

    async def __aexit__(self, *exc: Any) -> None:
        self.line._lock.release()
        self.line.in_line -= 1


# ---- HTTP -------------------------------------------------------------------------------------------------------
class _API:
    """The route handlers of one app (state lives here, not in app keys)."""

    def __init__(self, engine: ChatEngine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.line = GenerationLine(engine, config.max_queue)
        self.created = int(time.time())
        self.page = WEB_PAGE.read_bytes() if WEB_PAGE.is_file() else b"<!doctype html><title>medgspo</title>"

    async def index(self, request):
        from aiohttp import web

        headers = {"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                   "style-src 'unsafe-inline'", "X-Content-Type-Options": "nosniff"}  # fmt: skip
        return web.Response(body=self.page, content_type="text/html", charset="utf-8", headers=headers)

    async def health(self, request):
        return _json({"status": "ok", "model": self.config.model_id, "in_line": self.line.in_line})

    async def models(self, request):
        return _json({"object": "list", "data": [self._model_card()]})

    async def model(self, request):
        if request.match_info["model"] != self.config.model_id:
            raise APIError(404, f"The model `{request.match_info['model']}` does not exist.", param="model",
                           code="model_not_found")  # fmt: skip
        return _json(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_id, "object": "model", "created": self.created, "owned_by": "medgspo"}

    async def chat_completions(self, request):
        chat = parse_chat_request(await _read_json(request, self.config.max_body_bytes), self.config)
        from jinja2 import TemplateError

        try:
            prompt = self.engine.render(chat.messages)
        except (TemplateError, ValueError) as exc:  # the chat template rejects the conversation
            raise APIError(400, f"The chat template rejected the messages: {exc}", param="messages") from None
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            return await self._stream(request, chat, completion_id, prompt_opens_thinking(prompt))
        result = await self.line.complete(chat.messages, chat.options)
        return _json(completion_body(completion_id, self.config.model_id, result))

    async def _stream(self, request, chat: ChatRequest, completion_id: str, opens_thinking: bool):
        from aiohttp import web

        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                   "X-Accel-Buffering": "no"}  # fmt: skip
        stream = self.line.stream(chat.messages, chat.options)
        first = await anext(stream)  # waits for our turn (and raises 503 before any byte is sent)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        chunk = partial(chunk_body, completion_id, self.config.model_id)
        splitter = ThinkSplitter(start_in_thinking=opens_thinking)
        try:
            await response.write(sse(chunk({"role": "assistant", "content": ""})))
            item = first
            while not isinstance(item, GenerationResult):
                await _write_events(response, chunk, splitter.feed(item))
                item = await anext(stream)
            await _write_events(response, chunk, splitter.flush())
            await response.write(sse(chunk({}, item.finish_reason)))
            if chat.include_usage:
                await response.write(sse({**chunk({}), "choices": [], "usage": usage(item)}))
            await response.write(sse("[DONE]"))
        except ConnectionError:
            logger.info("Client went away during %s; generation stopped.", completion_id)
        except Exception:
            logger.exception("Generation failed during %s", completion_id)
            await response.write(sse(APIError(500, "Generation failed.", type="server_error").body()))
        finally:
            await stream.aclose()
        return response


async def _write_events(response, chunk, events) -> None:
    for kind, text in events:
        await response.write(sse(chunk({"reasoning_content" if kind == THINKING else "content": text})))


async def _read_json(request, max_body_bytes: int) -> Any:
    from aiohttp import web

    if request.content_length is not None and request.content_length > max_body_bytes:
        raise APIError(413, f"The request body is larger than {max_body_bytes} bytes.", code="request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise APIError(
            413, f"The request body is larger than {max_body_bytes} bytes.", code="request_too_large"
        ) from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise APIError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None


def _json(data: Any, status: int = 200):
    from aiohttp import web

    return web.json_response(data, status=status, dumps=partial(json.dumps, ensure_ascii=False))


def _middlewares(config: ServerConfig) -> list[Any]:
    from aiohttp import web

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except APIError as exc:
            return _json(exc.body(), exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = APIError(
                exc.status, f"{exc.reason}: {request.method} {request.path}", code=exc.reason.lower().replace(" ", "_")
            )
            return _json(error.body(), exc.status)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("Unexpected error on %s %s", request.method, request.path)
            return _json(APIError(500, "Internal server error.", type="server_error").body(), 500)

    @web.middleware
    async def auth(request, handler):
        if config.api_key and request.path.startswith("/v1/") and not _authorized(request, config.api_key):
            error = APIError(401, "Missing or incorrect API key; send `Authorization: Bearer <key>`.",
                             code="invalid_api_key")  # fmt: skip
            return _json(error.body(), 401)
        return await handler(request)

    return [errors, auth]


def _authorized(request, api_key: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


def create_app(engine: ChatEngine, config: ServerConfig):
    """The aiohttp application serving ``engine`` (run it with ``aiohttp.web.run_app`` or :class:`BackgroundServer`)."""
    from aiohttp import web

    api = _API(engine, config)
    app = web.Application(middlewares=_middlewares(config), client_max_size=config.max_body_bytes)
    app.router.add_get("/", api.index)
    app.router.add_get("/health", api.health)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/v1/models/{model}", api.model)
    app.router.add_post("/v1/chat/completions", api.chat_completions)

    async def close_line(_app) -> None:
        api.line.close()

    app.on_cleanup.append(close_line)
    return app


class BackgroundServer:
    """Serve an app on 127.0.0.1 (a free port by default) from a daemon thread; for notebooks and tests.

    >>> with BackgroundServer(create_app(engine, ServerConfig("tiny"))) as server:  # doctest: +SKIP
    ...     OpenAI(base_url=server.url + "/v1", api_key="none")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="medgspo-serve", daemon=True)
        self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- command line -----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``."""
    defaults = ServerConfig(model_id="")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    parser.add_argument("--served-model-name", default=None,
                        help="the `model` name clients use (default: the --adapter path, else --model)")  # fmt: skip
    parser.add_argument("--api-key-env", default=None,
                        help="environment variable holding an API key; clients must then send it as a Bearer token")  # fmt: skip
    parser.add_argument("--max-tokens-limit", type=int, default=defaults.max_tokens_limit,
                        help="largest max_tokens a request may ask for, and the default (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                        help="largest request body; bigger ones get 413 (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="requests that may wait for the model; more get 503 (default %(default)s)")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` the flags describe (``ValueError`` names the flag to change)."""
    for flag in ("max_tokens_limit", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    if args.max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0 (got {args.max_queue})")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535 (got {args.port})")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "").strip()
        if not api_key:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    model_id = args.served_model_name or (str(args.adapter) if args.adapter else args.model)
    return ServerConfig(model_id, api_key, args.max_tokens_limit, args.max_body_bytes, args.max_queue)


def run(args: argparse.Namespace) -> int:
    """Run ``medgspo serve`` until interrupted; returns the exit code (one-line errors for user mistakes)."""
    try:
        config = config_from_args(args)
        engine = ChatEngine.load(args.model, args.adapter)
    except ValueError as exc:
        return _error(str(exc))
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logger.warning("Listening on %s without an API key: anyone who can reach this port can use the model.",
                       args.host)  # fmt: skip
    try:
        asyncio.run(_serve(create_app(engine, config), args.host, args.port, config))
    except OSError as exc:
        return _error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(app: Any, host: str, port: int, config: ServerConfig) -> None:
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        url = f"http://{host if ':' not in host else f'[{host}]'}:{runner.addresses[0][1]}"
        key_note = " (API key required)" if config.api_key else ""
        sys.stdout.write(f"Serving `{config.model_id}`{key_note}\n  web page: {url}/\n  API:      {url}/v1\n")
        sys.stdout.flush()
        await _until_terminated()
    finally:
        await runner.cleanup()


async def _until_terminated() -> None:
    """Wait for SIGTERM (a service manager stopping us); Ctrl-C (SIGINT) is handled by ``asyncio.run``."""
    stop = asyncio.Event()
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError):  # no signal handlers on this platform / thread
        pass
    await stop.wait()


def _error(message: str) -> int:
    sys.stderr.write(f"medgspo serve: error: {message}\n")
    return 2
