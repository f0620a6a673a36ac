"""Issue 15's check: ``medgspo serve`` on the tiny model with the official ``openai`` client, many users at once.

16 concurrent chats against one, then 64 at once: each is answered, or refused with 503 and ``Retry-After``, and
``/health`` shows that requests really were generated together (batches larger than one). No timing is asserted;
``bench/serve_throughput.py`` measures the speed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine

MODEL_ID = "medgspo-load"
MAX_TOKENS = 24
MAX_BATCH, MAX_QUEUE = 16, 16


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    engine = ChatEngine.load(str(tiny_model_dir))
    config = ServerConfig(MODEL_ID, max_tokens_limit=MAX_TOKENS, max_batch_size=MAX_BATCH, max_queue=MAX_QUEUE)
    with BackgroundServer(create_app(engine, config)) as running:
        yield running


def health(server) -> dict:
    with urllib.request.urlopen(server.url + "/health", timeout=30) as response:
        return json.loads(response.read())


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"第{i}位患者：发热咳嗽三天，最可能的诊断是什么？"}]


def answered(completion) -> bool:
    choice = completion.choices[0]
    return choice.finish_reason in ("stop", "length") and 1 <= completion.usage.completion_tokens <= MAX_TOKENS


def test_sixteen_concurrent_chats_against_one(server):
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)

    def chat(i: int):
        return client.chat.completions.create(model=MODEL_ID, messages=messages(i), max_tokens=MAX_TOKENS)

    assert answered(chat(0))
    with ThreadPoolExecutor(max_workers=16) as pool:
        completions = list(pool.map(chat, range(1, 17)))
    assert all(answered(c) for c in completions)
    assert len({c.id for c in completions}) == 16
    assert health(server)["largest_batch"] > 1  # they were generated together, not one after another


async def _one(client: AsyncOpenAI, i: int):
    """A completion, or the ``openai`` exception; every other request streams."""
    kwargs = {"model": MODEL_ID, "messages": messages(i), "max_tokens": MAX_TOKENS, "seed": i}
    try:
        if i % 2:
            return await client.chat.completions.create(**kwargs)
        chunks = [chunk async for chunk in await client.chat.completions.create(**kwargs, stream=True)]
        return chunks
    except openai.APIStatusError as error:
        return error


def test_sixty_four_at_once_are_answered_or_politely_refused(server):
    async def sixty_four():
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        async with client:
            return await asyncio.gather(*(_one(client, i) for i in range(64)))

    before = health(server)
    results = asyncio.run(sixty_four())
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    for error in refused:
        assert error.status_code == 503 and error.body["code"] == "server_busy"
        assert int(error.response.headers["Retry-After"]) >= 1
    done = [r for r in results if not isinstance(r, openai.APIStatusError)]
    for result in done:
        if isinstance(result, list):  # a stream: content chunks, then the finish reason
            assert result[-1].choices[0].finish_reason in ("stop", "length")
        else:
            assert answered(result)
    assert len(done) + len(refused) == 64
    assert len(done) >= MAX_BATCH + MAX_QUEUE  # a refusal only comes while that many are in the server
    after = health(server)
    assert after["requests"]["rejected"] - before["requests"]["rejected"] == len(refused)
    assert after["requests"]["completed"] - before["requests"]["completed"] == len(done)
    assert after["largest_batch"] > 1 and after["mean_batch_size"] > 1
    assert (after["queue"], after["batch_size"]) == (0, 0)
