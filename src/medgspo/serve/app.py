"""The aiohttp application of ``medgspo serve``: routes, middlewares, the generation line and a background server.

    app = create_app(ChatEngine.load("tiny"), ServerConfig("medgspo"))
    asyncio.run(serve(app, "127.0.0.1", 8000, on_started=print))     # what `medgspo serve` does
    with BackgroundServer(app) as server: ...                          # notebooks and tests: server.url

Routes: ``GET /`` (the web page, ``resources/web/index.html``), ``GET /health``, ``GET /v1/models``,
``GET /v1/models/{id}`` and ``POST /v1/chat/completions`` (``stream`` true or false; the wire format is
:mod:`medgspo.serve.protocol`). One generation runs at a time (the model is not thread-safe); other requests wait in
a bounded line (503 when it is full). aiohttp is imported inside the functions.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.engine import ChatEngine, GenerationResult
from medgspo.serve.protocol import (
    APIError,
    ChatRequest,
    ServerConfig,
    chunk_body,
    completion_body,
    parse_chat_request,
    sse,
    usage,
)
from medgspo.serve.streaming import THINKING, ThinkSplitter, prompt_opens_thinking
from medgspo.utils.paths import RESOURCES

logger = logging.getLogger(__name__)

WEB_PAGE = RESOURCES / "web" / "index.html"
_DONE = object()


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

    def _turn(self) -> _InLine:
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


# ---- routes -----------------------------------------------------------------------------------------------------
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

        headers = {
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        }
        return web.Response(body=self.page, content_type="text/html", charset="utf-8", headers=headers)

    async def health(self, request):
        return _json({"status": "ok", "model": self.config.model_id, "in_line": self.line.in_line})

    async def models(self, request):
        return _json({"object": "list", "data": [self._model_card()]})

    async def model(self, request):
        name = request.match_info["model"]
        if name != self.config.model_id:
            raise APIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")
        return _json(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_id, "object": "model", "created": self.created, "owned_by": "medgspo"}

    async def chat_completions(self, request):
        from jinja2 import TemplateError

        chat = parse_chat_request(await _read_json(request, self.config.max_body_bytes), self.config)
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

        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
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

    too_large = APIError(413, f"The request body is larger than {max_body_bytes} bytes.", code="request_too_large")
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise APIError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None


def _json(data: Any, status: int = 200):
    from aiohttp import web

    return web.json_response(data, status=status, dumps=partial(json.dumps, ensure_ascii=False))


# ---- middlewares ------------------------------------------------------------------------------------------------
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
            code = exc.reason.lower().replace(" ", "_")
            error = APIError(exc.status, f"{exc.reason}: {request.method} {request.path}", code=code)
            return _json(error.body(), exc.status)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("Unexpected error on %s %s", request.method, request.path)
            return _json(APIError(500, "Internal server error.", type="server_error").body(), 500)

    @web.middleware
    async def auth(request, handler):
        if config.api_key and request.path.startswith("/v1/") and not _authorized(request, config.api_key):
            message = "Missing or incorrect API key; send `Authorization: Bearer <key>`."
            return _json(APIError(401, message, code="invalid_api_key").body(), 401)
        return await handler(request)

    return [errors, auth]


def _authorized(request, api_key: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


# ---- running it -------------------------------------------------------------------------------------------------
def create_app(engine: ChatEngine, config: ServerConfig):
    """The aiohttp application serving ``engine`` (run it with :func:`serve` or :class:`BackgroundServer`)."""
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


async def serve(app: Any, host: str, port: int, on_started: Callable[[str], None]) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM (Ctrl-C raises ``KeyboardInterrupt`` out of ``asyncio.run``).

    ``on_started`` gets the base URL once the port is open; ``OSError`` when it cannot be opened.
    """
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        on_started(f"http://{host if ':' not in host else f'[{host}]'}:{runner.addresses[0][1]}")
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
