"""A local server that speaks the Hub endpoints ``huggingface_hub`` calls to create a repository and commit files
(``/api/repos/create``, ``/api/validate-yaml``, ``preupload``, ``commit``); it keeps what it received. Files are asked for in the regular
(inline, base64) upload mode, so no LFS storage is involved."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import yaml
from aiohttp import web


class FakeHub:
    def __init__(self) -> None:
        self.repos: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.url = ""
        self.validated: list[dict] = []
        self.reject_yaml: str | None = None  # an error message: the next validation answers 400 with it

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/api/repos/create", self.create)
        app.router.add_post("/api/validate-yaml", self.validate_yaml)
        app.router.add_post("/api/models/{ns}/{name}/preupload/{rev}", self.preupload)
        app.router.add_post("/api/models/{ns}/{name}/commit/{rev}", self.commit)
        app.middlewares.append(self.log)
        return app

    @web.middleware
    async def log(self, request, handler):
        self.requests.append(f"{request.method} {request.path} {request.headers.get('authorization', '')}")
        return await handler(request)

    async def create(self, request):
        body = await request.json()
        self.repos.append(body)
        return web.json_response({"url": f"{self.url}/{body.get('organization')}/{body['name']}"})

    async def validate_yaml(self, request):
        """The README front matter must be YAML (the Hub checks its fields too: ``reject_yaml`` plays that)."""
        body = await request.json()
        self.validated.append(body)
        front = body["content"].split("---")[1]
        yaml.safe_load(front)
        if self.reject_yaml:
            return web.json_response({"errors": [{"message": self.reject_yaml}], "warnings": []}, status=400)
        return web.json_response({"errors": [], "warnings": []})

    async def preupload(self, request):
        body = await request.json()
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
        return web.json_response({"files": files})

    async def commit(self, request):
        for line in (await request.text()).splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        repo = f"{request.match_info['ns']}/{request.match_info['name']}"
        return web.json_response(
            {"commitUrl": f"{self.url}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40, "pullRequestUrl": None}
        )


def start(hub: FakeHub) -> tuple[str, callable]:
    """Serve ``hub`` on 127.0.0.1 in a thread; return its URL and a stop function."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(hub.app())
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        hub.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return hub.url, stop
