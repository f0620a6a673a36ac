"""A local OpenAI-compatible chat-completions server for the judge's tests and benchmark (aiohttp, 127.0.0.1).

It reads the question, reference and candidate out of the judge's prompt tags, asks a programmable ``rule`` for a
label and answers with the JSON verdict the rubric asks for, with ``usage`` (including DeepSeek-style
``prompt_cache_hit_tokens`` when a prompt prefix was seen before). Faults are injected per request, first from
``faults_for[answer]`` then from the global ``faults`` queue: an HTTP status (with ``Retry-After``), a stall that
keeps the connection alive with blank lines like DeepSeek does, a malformed body, a blank reply, any given content
(with or without ``reasoning_content``), or a dropped connection.

``requests`` holds the judge's requests (those with the rubric's tags); any other chat request, such as the
judge's pre-flight check, goes to ``probes``. ``GET /v1/models`` lists ``served_models`` (default: ``model``).
:class:`DeepSeekLikeServer` behaves like DeepSeek's API today: it serves only ``deepseek-flash`` and
``deepseek-v4-pro`` (and the legacy alias ``deepseek-v4-flash``), rejects other names with DeepSeek's
``400 Model Not Exist``, and thinks unless the request sends ``"thinking": {"type": "disabled"}``: a long
``reasoning_content``, billed as completion tokens, after ``think_s`` seconds.

    with FakeOpenAIServer(rule=lambda q, r, a: "A") as server:
        judge = make_judge(JudgeConfig(judge_backend="openai", judge_base_url=server.base_url), api_key="test-key")

``serve_in_process`` runs one in a child process (the benchmark does, so the server does not share the GIL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

Rule = Callable[[str, str, str], str]  # (question, reference, answer) -> label A-E
# The candidate's delimiters carry a per-candidate nonce in rubric v2 (<candidate_answer_1a2b3c4d>), none in v1.
_TAGS = {
    name: re.compile(rf"<{name}(_[0-9a-f]{{8}}|)>\n?(?P<text>.*?)\n?</{name}\1>", re.DOTALL)
    for name in ("question", "reference_answer", "candidate_answer")
}


def exact_match_rule(question: str, reference: str, answer: str) -> str:
    """``A`` when the answer equals the reference, ``D`` when it says 不是/不应, else ``B``."""
    if answer.strip() == reference.strip():
        return "A"
    return "D" if ("不是" in answer or "不应" in answer) else "B"


def verdict_json(label: str, reason: str = "测试服务器的判定") -> str:
    return json.dumps({"reason": reason, "label": label}, ensure_ascii=False)


@dataclass
class Fault:
    """One injected misbehaviour for one request."""

    kind: str  # status | stall | malformed | content | drop
    status: int = 200
    retry_after: str | None = None
    seconds: float = 0.0
    content: str | None = None
    reasoning_content: str | None = None

    @classmethod
    def http(cls, status: int, retry_after: float | str | None = None) -> Fault:
        return cls("status", status=status, retry_after=None if retry_after is None else str(retry_after))

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """HTTP 200 at once, then a blank line every 50 ms for ``seconds``, then a valid reply."""
        return cls("stall", seconds=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        return cls("malformed")

    @classmethod
    def reply(cls, content: str | None, reasoning_content: str | None = None) -> Fault:
        """A well-formed response whose message content is exactly ``content``."""
        return cls("content", content=content, reasoning_content=reasoning_content)

    @classmethod
    def blank(cls) -> Fault:
        return cls.reply("")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering."""
        return cls("drop")


class FakeOpenAIServer:
    """The server; ``start()`` runs it on a background thread and returns its ``base_url`` (ending in ``/v1``)."""

    served_models: tuple[str, ...] | None = None  # None: list `model`, accept any name
    accepted_aliases: tuple[str, ...] = ()
    thinks_by_default = False
    think_s = 0.0

    def __init__(self, rule: Rule | None = None, latency_s: float = 0.0, model: str = "fake-judge"):
        self.rule = rule or exact_match_rule
        self.latency_s = latency_s
        self.model = model
        self.faults: deque[Fault] = deque()
        self.faults_for: dict[str, deque[Fault]] = {}
        self.requests: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []  # chat requests without the judge's prompt (pre-flight checks)
        self.model_listings = 0  # GET /models requests
        self.thought = 0  # requests answered with thinking (no `thinking: disabled`)
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.abandoned = 0  # stalled replies the client gave up on
        self._prefixes: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inject(self, *faults: Fault, answer: str | None = None) -> None:
        """Queue faults for the next requests (for one candidate answer only when ``answer`` is given, matched as
        the judge shows it: width-folded, since the judge sends NFKC text)."""
        key = None if answer is None else unicodedata.normalize("NFKC", answer)
        target = self.faults if key is None else self.faults_for.setdefault(key, deque())
        target.extend(faults)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        return app

    @property
    def total_requests(self) -> int:
        """Every request the server received: judge calls, probes and model listings."""
        return len(self.requests) + len(self.probes) + self.model_listings

    async def _models(self, request: web.Request) -> web.Response:
        self.model_listings += 1
        names = self.served_models if self.served_models is not None else (self.model,)
        data = [{"id": name, "object": "model", "owned_by": "fake"} for name in names]
        return web.json_response({"object": "list", "data": data})

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_site())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-openai-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self.base_url

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = self._runner = None

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- handling ------------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        user = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"), "")
        (self.requests if "<candidate_answer" in str(user) else self.probes).append(body)
        self.auth_headers.append(request.headers.get("Authorization", ""))
        question, reference, answer = self._fields(body)
        fault = self._next_fault(answer)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault is None and not self._serves(body.get("model")):
            error = {"message": "Model Not Exist", "type": "invalid_request_error", "param": None}
            return web.json_response({"error": error | {"code": "invalid_request_error"}}, status=400)
        thinking = None
        if self.thinks_by_default and body.get("thinking") != {"type": "disabled"}:
            self.thought += 1
            await asyncio.sleep(self.think_s)
            thinking = "嗯，让我仔细想想这个回答和参考答案是否一致。" * 200
        if fault is None:
            return self._ok(body, verdict_json(self.rule(question, reference, answer)), thinking)
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            error = {"error": {"message": f"injected HTTP {fault.status}", "type": "injected", "code": None}}
            return web.json_response(error, status=fault.status, headers=headers)
        if fault.kind == "malformed":
            return web.Response(text='{"id": "broken", "choices": [', content_type="application/json")
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault.kind == "stall":
            return await self._stall(request, body, fault.seconds)
        return self._ok(body, fault.content, fault.reasoning_content)

    def _serves(self, model: Any) -> bool:
        return self.served_models is None or model in (*self.served_models, *self.accepted_aliases)

    def _next_fault(self, answer: str) -> Fault | None:
        queue = self.faults_for.get(answer)
        if queue:
            return queue.popleft()
        return self.faults.popleft() if self.faults else None

    @staticmethod
    def _fields(body: dict[str, Any]) -> tuple[str, str, str]:
        user = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"), "")
        found = {name: (m.group("text") if (m := p.search(user)) else "") for name, p in _TAGS.items()}
        return found["question"], found["reference_answer"], found["candidate_answer"]

    def _ok(self, body: dict[str, Any], content: str | None, reasoning: str | None = None) -> web.Response:
        return web.Response(
            text=json.dumps(self._completion(body, content, reasoning)), content_type="application/json"
        )

    def _completion(self, body: dict[str, Any], content: str | None, reasoning: str | None) -> dict[str, Any]:
        messages = body.get("messages", [])
        prompt = "".join(str(m.get("content", "")) for m in messages)
        prefix = prompt.rsplit("<candidate_answer", 1)[0]
        cached = len(prefix) // 2 if prefix in self._prefixes else 0
        self._prefixes.add(prefix)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        completion_tokens = len(content or "") // 2 + len(reasoning or "") // 2 + 1
        usage = {
            "prompt_tokens": len(prompt) // 2,
            "completion_tokens": completion_tokens,
            "total_tokens": len(prompt) // 2 + completion_tokens,
            "prompt_cache_hit_tokens": cached,
            "prompt_cache_miss_tokens": len(prompt) // 2 - cached,
        }
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }

    async def _stall(self, request: web.Request, body: dict[str, Any], seconds: float) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await response.write(b"\n")
                await asyncio.sleep(0.05)
            question, reference, answer = self._fields(body)
            completion = self._completion(body, verdict_json(self.rule(question, reference, answer)), None)
            await response.write(json.dumps(completion).encode())
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.abandoned += 1  # the client gave up, as it should
        return response


class DeepSeekLikeServer(FakeOpenAIServer):
    """DeepSeek's API as it is today (read 2026-11-29): today's names only, thinking unless switched off."""

    served_models = ("deepseek-flash", "deepseek-v4-pro")
    accepted_aliases = ("deepseek-v4-flash",)
    thinks_by_default = True
    think_s = 3.0

    def __init__(self, rule: Rule | None = None, latency_s: float = 0.0, think_s: float = 3.0):
        super().__init__(rule, latency_s, model="deepseek-flash")
        self.think_s = think_s


def _serve_forever(latency_s: float, port_queue: Any) -> None:
    server = FakeOpenAIServer(latency_s=latency_s, rule=lambda q, r, a: "A")
    server.start()
    port_queue.put(server.port)
    while True:
        time.sleep(3600)


@contextmanager
def serve_in_process(latency_s: float = 0.0) -> Iterator[str]:
    """Run a server (every answer judged ``A``) in a child process; yields its ``base_url``."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_serve_forever, args=(latency_s, queue), daemon=True)
    process.start()
    try:
        port = queue.get(timeout=30)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.join(timeout=10)
