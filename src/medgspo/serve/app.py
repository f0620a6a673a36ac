"""The aiohttp application of ``medgspo serve``: routes, middlewares, the generation line and a background server.

    app = create_app(ChatEngine.load("tiny"), ServerConfig("medgspo"))
    asyncio.run(serve(app, "127.0.0.1", 8000, on_started=print))     # what `medgspo serve` does
    with BackgroundServer(app) as server: ...                          # notebooks and tests: server.url

Routes: ``GET /`` (the web page, ``resources/web/index.html``), ``GET /health``, ``GET /v1/models``,
``GET /v1/models/{id}``, and the generation routes ``POST /v1/chat/completions`` and ``POST /v1/completions``
(:mod:`medgspo.serve.endpoints`). Requests are generated together by one :class:`~medgspo.serve.batcher.Batcher`
(continuous batching, at most ``max_batch_size`` rows); up to ``max_queue`` more wait, and beyond that the answer is
503 with ``Retry-After``. A client that disconnects frees its place. aiohttp is imported inside the functions.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from medgspo.serve import redact
from medgspo.serve.batcher import Batcher
from medgspo.serve.config import ServerConfig
from medgspo.serve.endpoints import Endpoints, json_response
from medgspo.serve.engine import ChatEngine
from medgspo.serve.protocol import APIError
from medgspo.utils.paths import RESOURCES

logger = logging.getLogger(__name__)

WEB_PAGE = RESOURCES / "web" / "index.html"


# ---- routes -----------------------------------------------------------------------------------------------------
class _API:
    """The route handlers of one app (state lives here, not in app keys)."""

    def __init__(self, engine: ChatEngine, config: ServerConfig, batcher: Batcher) -> None:
        self.engine = engine
        self.config = config
        self.batcher = batcher
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
        return json_response({"status": "ok", "model": self.config.model_id, **self.batcher.health()})

    async def models(self, request):
        return json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request):
        name = request.match_info["model"]
        if name != self.config.model_id:
            raise APIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")
        return json_response(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_id, "object": "model", "created": self.created, "owned_by": "medgspo"}


async def _read_json(request, limits: ServerConfig) -> Any:
    """The request's JSON body: 413 past ``max_body_bytes``, 408 when it does not arrive within
    ``keepalive_timeout``, 400 when it is not JSON or nests too deep (:func:`body_problem`)."""
    from aiohttp import web

    max_body_bytes = limits.max_body_bytes
    too_large = APIError(413, f"The request body is larger than {max_body_bytes} bytes.", code="request_too_large")
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise too_large
    try:
        raw = await asyncio.wait_for(request.read(), limits.keepalive_timeout)
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except asyncio.TimeoutError:
        message = f"The request body did not arrive within {limits.keepalive_timeout:g} s."
        raise APIError(408, message, code="request_timeout") from None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise APIError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if (problem := body_problem(body)) is not None:
        raise APIError(400, f"The JSON body of your request is not accepted: {problem}.", code="invalid_json")
    return body


MAX_JSON_DEPTH = 32  # a chat request nests 4 deep (body, messages, message, content parts)


def body_problem(body: Any) -> str | None:
    """What makes a decoded body unusable before any field is read, or ``None``: nesting deeper than
    :data:`MAX_JSON_DEPTH`, or a string with a lone UTF-16 surrogate (``"\\ud800"`` decodes, but no text encoder
    takes it).

    >>> body_problem({"messages": [{"content": "好"}]}) is None, body_problem({"a": "\\ud800"})
    (True, 'a string holds a lone surrogate (U+D800)')
    >>> body_problem(json.loads("[" * 40 + "]" * 40))
    'nested deeper than 32 levels'
    """
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(value, str):
            if (bad := next((c for c in value if "\ud800" <= c <= "\udfff"), None)) is not None:
                return f"a string holds a lone surrogate (U+{ord(bad):04X})"
        elif isinstance(value, dict):
            stack += [(k, depth + 1) for k in value] + [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
    return None


# ---- middlewares ------------------------------------------------------------------------------------------------
def _middlewares(config: ServerConfig) -> list[Any]:
    from aiohttp import web

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except APIError as exc:
            return json_response(exc.body(), exc.status, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            error = APIError(exc.status, f"{exc.reason}: {request.method} {request.path}", code=code)
            return json_response(error.body(), exc.status)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("Unexpected error on %s %s", request.method, request.path)
            return json_response(APIError(500, "Internal server error.", type="server_error").body(), 500)

    @web.middleware
    async def auth(request, handler):
        if config.api_key and request.path.startswith("/v1/") and not _authorized(request, config.api_key):
            message = "Missing or incorrect API key; send `Authorization: Bearer <key>`."
            return json_response(APIError(401, message, code="invalid_api_key").body(), 401)
        return await handler(request)

    return [errors, auth]


def _authorized(request, api_key: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


# ---- running it -------------------------------------------------------------------------------------------------
def create_app(engine: ChatEngine, config: ServerConfig, batcher: Batcher | None = None):
    """The aiohttp application serving ``engine`` (run it with :func:`serve` or :class:`BackgroundServer`).

    Without ``batcher`` one is made from ``config`` and started; a given one is used as it is (started or not).
    Either way it is closed with the app.
    """
    from aiohttp import web

    redact.install(config.api_key)  # no key in any aiohttp log line, whatever a client sends
    if batcher is None:
        batcher = Batcher(engine, config.max_batch_size, config.max_queue, config.prefill_chunk).start()
    config.fit_model(engine.model)
    api = _API(engine, config, batcher)
    endpoints = Endpoints(engine, config, batcher, partial(_read_json, limits=config))
    app = web.Application(
        middlewares=_middlewares(config),
        client_max_size=config.max_body_bytes,
        handler_args={"keepalive_timeout": config.keepalive_timeout},  # headers must arrive within it, too
    )
    app.router.add_get("/", api.index)
    app.router.add_get("/health", api.health)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/v1/models/{model}", api.model)
    app.router.add_post("/v1/chat/completions", endpoints.chat_completions)
    app.router.add_post("/v1/completions", endpoints.completions)

    async def close_batcher(_app) -> None:
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app.on_cleanup.append(close_batcher)
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
