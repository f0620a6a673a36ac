"""A local OpenAI-compatible judge for the GPU check: aiohttp on 127.0.0.1, in a background thread.

It answers ``POST /v1/chat/completions`` with the JSON verdict the rubric asks for (``A`` when the candidate equals
the reference, else ``B``), with a ``usage`` block, after ``latency_s``. It counts requests and the most that were
in flight at once. Self-contained (aiohttp only), so the check needs nothing from ``tests/``.

    with FakeJudge(latency_s=0.3) as judge:
        ... --judge_backend local --judge_base_url {judge.base_url} --judge_model fake-judge ...
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any

from aiohttp import web

_TAGS = {
    name: re.compile(rf"<{name}>\n?(.*?)\n?</{name}>", re.DOTALL)
    for name in ("question", "reference_answer", "candidate_answer")
}


class FakeJudge:
    """The server; ``start()`` returns its ``base_url`` (ending in ``/v1``), ``stop()`` shuts it down."""

    def __init__(self, latency_s: float = 0.0, model: str = "fake-judge"):
        self.latency_s = latency_s
        self.model = model
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "max_in_flight": self.max_in_flight, "latency_s": self.latency_s}

    def start(self) -> str:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_site())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-judge", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fake judge server did not start")
        return self.base_url

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = self._runner = None

    def __enter__(self) -> FakeJudge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return web.Response(text=json.dumps(self._completion(body)), content_type="application/json")
        finally:
            self.in_flight -= 1

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        user = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"), "")
        found = {name: (m.group(1) if (m := p.search(str(user))) else "") for name, p in _TAGS.items()}
        label = "A" if found["candidate_answer"].strip() == found["reference_answer"].strip() else "B"
        content = json.dumps({"reason": "fake judge", "label": label}, ensure_ascii=False)
        prompt_tokens, completion_tokens = len(str(user)) // 2, len(content) // 2
        return {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
