"""``medgspo serve``: a real server on 127.0.0.1, called through the official ``openai`` client and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI
from test_chat import ANSWER, QUESTION, THINKING, memorized_adapter

from medgspo.cli import main
from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.batcher import Batcher
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine

MODEL_ID = "medgspo-test"
LIMIT = 16
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory) -> ChatEngine:
    return memorized_engine(tiny_model_dir, tmp_path_factory)


def memorized_engine(tiny_model_dir, tmp_path_factory) -> ChatEngine:
    """The tiny model with the adapter that answers QUESTION with THINKING and ANSWER."""
    adapter = memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")
    return ChatEngine.load(str(tiny_model_dir), adapter)


@pytest.fixture(scope="module")
def server(engine):
    with BackgroundServer(create_app(engine, ServerConfig(MODEL_ID, max_tokens_limit=LIMIT))) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return openai_client(server)


def openai_client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client: OpenAI, **kwargs):
    kwargs = {"max_tokens": LIMIT, **kwargs}
    return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], **kwargs)


def http(url: str, body: bytes | dict | None = None, method: str | None = None, headers: dict | None = None):
    """``(status, parsed JSON body)`` of one raw request."""
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ---- the openai client ------------------------------------------------------------------------------------------
def test_reasoning_and_answer_are_split(client):
    completion = ask(client)
    message = completion.choices[0].message
    assert message.reasoning_content == THINKING
    assert message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL_ID and completion.object == "chat.completion"
    usage = completion.usage
    assert usage.completion_tokens == 13 and usage.prompt_tokens > 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_sends_reasoning_then_content_deltas(client):
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    reasoning = [getattr(d, "reasoning_content", None) for d in deltas]
    content = [d.content for d in deltas]
    assert "".join(r for r in reasoning if r) == THINKING
    assert "".join(c for c in content if c) == ANSWER
    assert sum(bool(c) for c in content) >= 2  # token by token, not one block
    last_reasoning = max(i for i, r in enumerate(reasoning) if r)
    assert all(not c for c in content[: last_reasoning + 1])  # all reasoning comes before the answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 13
    assert len({c.id for c in chunks}) == 1


def test_length_limit_is_reported(client):
    completion = ask(client, max_tokens=3, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    assert completion.choices[0].message.content == ""
    assert completion.choices[0].message.reasoning_content == "我先想一"  # tokens 我先 / 想 / 一


def test_stop_strings_cut_the_answer(client):
    completion = ask(client, stop=["肺炎", "never"])
    assert completion.choices[0].message.content == ANSWER[: ANSWER.index("肺炎")]
    assert completion.choices[0].message.reasoning_content == THINKING
    assert completion.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, stop="肺炎", stream=True) if c.choices)
    assert streamed == ANSWER[: ANSWER.index("肺炎")]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    code, health = http(server.url + "/health")
    assert code == 200 and (health["status"], health["model"]) == ("ok", MODEL_ID)
    assert (health["queue"], health["batch_size"], health["max_batch_size"]) == (0, 0, 16)
    assert set(health["requests"]) == {"completed", "cancelled", "rejected", "failed"}
    ask(client, max_tokens=2)
    assert http(server.url + "/health")[1]["requests"]["completed"] == health["requests"]["completed"] + 1


def test_concurrent_requests_all_succeed(client):
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(lambda s=stream: _answer_text(client, s)) for stream in (False, True, False, True)]
        results = [f.result(timeout=120) for f in futures]
    assert results == [(THINKING, ANSWER)] * 4


def _answer_text(client: OpenAI, stream: bool) -> tuple[str, str]:
    if not stream:
        message = ask(client).choices[0].message
        return message.reasoning_content, message.content
    deltas = [c.choices[0].delta for c in ask(client, stream=True) if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    return reasoning, "".join(d.content or "" for d in deltas)


# ---- bad requests -----------------------------------------------------------------------------------------------
GOOD = {"model": MODEL_ID, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
BAD_REQUESTS = {
    "invalid JSON": (b'{"messages": [', 400, None),
    "not an object": ([1, 2], 400, None),
    "no messages": ({"model": MODEL_ID}, 400, "messages"),
    "empty messages": ({**GOOD, "messages": []}, 400, "messages"),
    "messages not a list": ({**GOOD, "messages": "你好"}, 400, "messages"),
    "message not an object": ({**GOOD, "messages": ["你好"]}, 400, "messages[0]"),
    "unknown role": ({**GOOD, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    "tool role": ({**GOOD, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
    "last is assistant": ({**GOOD, "messages": [{"role": "assistant", "content": "x"}]}, 400, "messages[0]"),
    "blank question": ({**GOOD, "messages": [{"role": "user", "content": "  "}]}, 400, "messages[0]"),
    "image content": (
        {**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400,
        "messages[0].content",
    ),
    "temperature string": ({**GOOD, "temperature": "hot"}, 400, "temperature"),
    "temperature bool": ({**GOOD, "temperature": True}, 400, "temperature"),
    "temperature too high": ({**GOOD, "temperature": 2.5}, 400, "temperature"),
    "top_p zero": ({**GOOD, "top_p": 0}, 400, "top_p"),
    "top_p string": ({**GOOD, "top_p": "0.9"}, 400, "top_p"),
    "top_k float": ({**GOOD, "top_k": 2.5}, 400, "top_k"),
    "max_tokens float": ({**GOOD, "max_tokens": 1.5}, 400, "max_tokens"),
    "max_tokens zero": ({**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    "max_tokens over the limit": ({**GOOD, "max_tokens": LIMIT + 1}, 400, "max_tokens"),
    "max_completion_tokens over": ({**GOOD, "max_completion_tokens": 10_000}, 400, "max_completion_tokens"),
    "stream not bool": ({**GOOD, "stream": "yes"}, 400, "stream"),
    "n above the batch": ({**GOOD, "n": 17}, 400, "n"),
    "n zero": ({**GOOD, "n": 0}, 400, "n"),
    "stop not a string": ({**GOOD, "stop": [1]}, 400, "stop"),
    "five stops": ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "unknown model": ({**GOOD, "model": "gpt-4o"}, 404, "model"),
    "body too large": ({**GOOD, "padding": "x" * (1 << 20)}, 413, None),
}


@pytest.mark.parametrize(("body", "status", "param"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_get_openai_errors(server, body, status, param):
    code, reply = http(server.url + "/v1/chat/completions", body)
    assert code == status
    assert set(reply) == {"error"} and set(reply["error"]) == ERROR_KEYS
    assert reply["error"]["param"] == param and reply["error"]["message"]


def test_wrong_method_and_unknown_path_are_json_errors(server):
    code, reply = http(server.url + "/v1/chat/completions")
    assert code == 405 and set(reply["error"]) == ERROR_KEYS
    code, reply = http(server.url + "/v1/nothing")
    assert code == 404 and reply["error"]["code"] == "not_found"


def test_good_request_after_bad_ones_still_works(server):
    code, reply = http(server.url + "/v1/chat/completions", {**GOOD, "top_k": -1, "temperature": 0, "seed": 3})
    assert code == 200 and reply["usage"]["completion_tokens"] == 2


def test_openai_client_raises_on_errors(client):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        ask(client, temperature=5)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


# ---- API key ----------------------------------------------------------------------------------------------------
def test_api_key_is_required_when_set(engine, caplog, monkeypatch):
    key = "sk-local-test-secret"
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MEDGSPO_TEST_KEY", key)
    config = ServerConfig(MODEL_ID, api_key_env="MEDGSPO_TEST_KEY", max_tokens_limit=LIMIT)
    with BackgroundServer(create_app(engine, config)) as server:
        url = server.url + "/v1/chat/completions"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            code, reply = http(url, GOOD, headers=headers)
            assert code == 401 and reply["error"]["code"] == "invalid_api_key"
        assert http(server.url + "/v1/models")[0] == 401
        assert http(server.url + "/health")[0] == 200
        ok = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        assert ask(ok).choices[0].message.content == ANSWER
    assert key not in caplog.text


def test_the_key_reaches_no_log_line_for_any_malformed_request(engine, caplog, monkeypatch):
    key = "sk-local-test-secret-2"
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MEDGSPO_TEST_KEY", key)
    config = ServerConfig(MODEL_ID, api_key_env="MEDGSPO_TEST_KEY", max_tokens_limit=LIMIT)
    raw_requests = [
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\r\n\r\n",  # a stray CR (Windows)
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\x00\r\n\r\n",
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: x\r\n\r\n",
        f"G\x01T /{key} HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    with BackgroundServer(create_app(engine, config)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for raw in raw_requests:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(raw.encode("latin-1"))
                assert sock.recv(4096).startswith(b"HTTP/1.")  # answered (400), not hung
        assert http(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})[0] == 200
    assert "Error handling request" in caplog.text or "400" in caplog.text  # the bad requests were logged ...
    assert key not in caplog.text  # ... without the key


# ---- overload and clients that go away ------------------------------------------------------------------------
def test_full_queue_gets_503_with_retry_after_and_frees_up(engine):
    batcher = Batcher(engine, max_batch_size=1, max_queue=1)  # not started yet: requests wait
    with BackgroundServer(create_app(engine, ServerConfig(MODEL_ID, max_tokens_limit=LIMIT), batcher)) as server:
        url = server.url + "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": LIMIT}
        with ThreadPoolExecutor(max_workers=2) as pool:
            waiting = [pool.submit(http, url, body) for _ in range(2)]
            wait_for(lambda: http(server.url + "/health")[1]["queue"] == 2)
            request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=60)
            assert refused.value.code == 503 and int(refused.value.headers["Retry-After"]) >= 1
            assert json.loads(refused.value.read())["error"]["code"] == "server_busy"
            batcher.start()
            answers = [f.result(timeout=60) for f in waiting]
        assert [a[1]["choices"][0]["message"]["content"] for a in answers] == [ANSWER, ANSWER]
        health = http(server.url + "/health")[1]
        assert (health["queue"], health["batch_size"], health["requests"]["rejected"]) == (0, 0, 1)


@pytest.fixture(scope="module")
def long_server(tiny_model_dir):
    """The base tiny model: greedy, it never ends a completion before max_tokens (1000 here)."""
    engine = ChatEngine.load(str(tiny_model_dir))
    with BackgroundServer(create_app(engine, ServerConfig("long", max_tokens_limit=1000))) as running:
        yield running


LONG = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000, "temperature": 0}


def test_streaming_client_that_disconnects_frees_its_slot(long_server):
    import aiohttp

    async def read_a_little_then_hang_up() -> bytes:
        async with aiohttp.ClientSession() as session:
            response = await session.post(long_server.url + "/v1/chat/completions", json={**LONG, "stream": True})
            assert response.status == 200
            first = await response.content.readline()  # the role chunk
            for _ in range(600):  # until the request is in the batch (bounded)
                async with session.get(long_server.url + "/health") as health:
                    if (await health.json())["batch_size"] == 1:
                        break
                await asyncio.sleep(0.05)
            response.close()  # hang up mid-stream
            return first

    before = http(long_server.url + "/health")[1]["requests"]
    assert asyncio.run(read_a_little_then_hang_up()).startswith(b'data: {"id": "chatcmpl-')
    wait_for(lambda: http(long_server.url + "/health")[1]["batch_size"] == 0)
    after = http(long_server.url + "/health")[1]["requests"]
    assert after["cancelled"] == before["cancelled"] + 1 and after["completed"] == before["completed"]


def test_client_that_gives_up_waiting_frees_its_slot(long_server):
    impatient = OpenAI(base_url=long_server.url + "/v1", api_key="unused", max_retries=0, timeout=0.5)
    import openai

    before = http(long_server.url + "/health")[1]["requests"]
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="long", **LONG)
    wait_for(lambda: http(long_server.url + "/health")[1]["requests"]["cancelled"] == before["cancelled"] + 1)
    assert http(long_server.url + "/health")[1]["batch_size"] == 0


def wait_for(condition, seconds: float = 60) -> None:
    """Poll ``condition`` until it holds (a bounded loop; fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_web_page_is_served(server):
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "提问" in response.read().decode("utf-8")


# ---- command line -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--api-key-env", "MEDGSPO_TEST_NO_SUCH_VAR"],
            "MEDGSPO_TEST_NO_SUCH_VAR: that environment variable is not set",
        ),
        (["--max-tokens-limit", "0"], "--max_tokens_limit must be >= 1"),
        (["--max_queue", "-1"], "--max_queue must be >= 0"),
        (["--max-batch-size", "0"], "--max_batch_size must be >= 1"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--adapter", "no-such-adapter"], "adapter folder not found"),
        (["--prefill-chunk", "0"], "--prefill_chunk must be >= 1"),
        (["--keepalive_timeout", "0"], "--keepalive_timeout must be > 0"),
        (["--default-chat-template-kwargs", "{enable_thinking: no}"], "must be a JSON object"),
        (["--default_chat_template_kwargs", '{"tools": []}'], "--default_chat_template_kwargs tools is not supported"),
        (["--default_chat_template_kwargs", '{"enable_thinking": 0}'], "enable_thinking must be a bool"),
    ],
)
def test_cli_mistakes_are_one_line_errors(argv, message, capsys):
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_reports_a_busy_port(tiny_model_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--model", str(tiny_model_dir), "--port", str(taken.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_serves_until_stopped(tiny_model_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MEDGSPO_TEST_KEY": "k"}
    argv = [sys.executable, "-m", "medgspo.cli", "serve", "--model", str(tiny_model_dir), "--port", str(port)]
    proc = subprocess.Popen([*argv, "--api_key_env", "MEDGSPO_TEST_KEY"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith(f"Serving `{tiny_model_dir}` (API key required)")
        assert http(f"http://127.0.0.1:{port}/health")[0] == 200
        assert http(f"http://127.0.0.1:{port}/v1/models")[0] == 401
        proc.send_signal(signal.SIGTERM)  # what a service manager sends; exits cleanly
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.stdout.close()


# ---- one request can never hurt another ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 2**64), ("seed", -(2**63) - 1), ("top_k", 2**63), ("top_k", 10**6)],
)
def test_out_of_range_values_are_400_naming_the_field_while_streams_finish(server, client, field, value):
    def stream() -> str:
        chunks = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], max_tokens=LIMIT, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(stream) for _ in range(3)]
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "你好"}], field: value}
        status, error = http(server.url + "/v1/chat/completions", body)
        answers = [s.result(timeout=120) for s in streams]
    assert status == 400 and error["error"]["param"] == field, error
    assert answers == [ANSWER] * 3  # every innocent stream ran to its end


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",  # nesting 10,000 deep
        json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "\ud800"}]}).encode(),
        json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "好"}], "stop": ["\udfff"]}).encode(),
    ],
    ids=["deep", "lone-surrogate", "surrogate-in-stop"],
)
def test_malformed_bodies_are_400_without_a_traceback(server, raw, caplog):
    with caplog.at_level(logging.DEBUG):
        status, error = http(server.url + "/v1/chat/completions", raw)
    assert status == 400 and error["error"]["code"] == "invalid_json", error
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"top_logprobs": 5}, "top_logprobs"),  # needs logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": "x"}, "frequency_penalty"),
        ({"logit_bias": {"11": 101}}, "logit_bias"),
        ({"logit_bias": {"-1": 5}}, "logit_bias"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
        ({"chat_template_kwargs": {"add_vision_id": True}}, "chat_template_kwargs.add_vision_id"),
        ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_nothing_asked_for_is_silently_ignored(server, extra, field):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 2, **extra}
    status, error = http(server.url + "/v1/chat/completions", body)
    assert status == 400 and error["error"]["param"] == field, error


def test_defaults_that_ask_for_nothing_are_accepted(client):
    completion = ask(client, logprobs=False, presence_penalty=0, frequency_penalty=0, tools=[], user="u1")
    assert completion.choices[0].message.content == ANSWER


def test_a_prompt_past_the_context_is_400_with_vllms_wording(server, client):
    long = {"model": MODEL_ID, "messages": [{"role": "user", "content": "胸痛发热" * 10_000}], "max_tokens": 4}
    steps = http(server.url + "/health")[1]["steps"]
    status, error = http(server.url + "/v1/chat/completions", long)
    assert status == 400 and error["error"]["code"] == "context_length_exceeded", error
    assert error["error"]["message"].startswith("This model's maximum context length is ")
    assert "in the messages" in error["error"]["message"]
    assert http(server.url + "/health")[1]["steps"] == steps  # refused before any forward pass
    assert ask(client).choices[0].message.content == ANSWER  # and the server goes on


def bad_bodies(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` (route, request body) pairs, each body wrong in one way: a field out of range or of the wrong type,
    an unsupported field asking for something, malformed JSON, a bad message list or prompt. Every fourth goes to
    ``/v1/completions`` (its ``prompt`` in place of ``messages``)."""
    import random

    rng = random.Random(seed)
    huge = [2**64, 2**63, -(2**63) - 1, 10**30, -1e308, float("inf")]
    wrong = {
        "temperature": [-0.1, 2.5, "hot", [], {}, *huge],
        "top_p": [0, -1, 1.5, "x", [], *huge],
        "top_k": [-2, 10**6, "k", 1.5, *huge],
        "max_tokens": [0, -5, LIMIT + 1, "ten", 2.5, *huge],
        "seed": [2**64, -(2**63) - 1, "s", 1.5, [1], 10**30],
        "n": [0, 17, 10**9, "1", 1.5],
        "stop": [5, [1, 2], ["a"] * 9, {"x": 1}],
        "messages": [[], "hi", [{"role": "robot", "content": "x"}], [{"role": "user"}], [{"content": "x"}], [1]],
        "logprobs": ["yes", 1],
        "top_logprobs": [21, -1, "5"],
        "presence_penalty": [-2.5, 3, "p"],
        "frequency_penalty": [2.1, [], float("inf")],
        "logit_bias": [{"1": 101}, {"x": 1}, {"99999999": 1}, {"1": "a"}, []],
        "response_format": [{"type": "json_object"}],
        "tools": [[{"type": "function"}]],
        "stream_options": [{"include_usage": True}],
        "model": ["another-model", 5],
    }
    prompts = ["", [], [1, 10**7], [-1], [[1], "a", 5], [True], {"a": 1}, [[]], 5]
    bodies = []
    for index in range(count):
        route = "/v1/completions" if index % 4 == 3 else "/v1/chat/completions"
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
        kind = rng.random()
        if kind < 0.1:
            bodies.append((route, rng.choice([b"{", b"[]", b"null", b'{"a": ' + b"[" * 5000, b"\xff\xfe", b""])))
            continue
        field = rng.choice(list(wrong))
        body[field] = rng.choice(wrong[field])
        if route == "/v1/completions":
            messages = body.pop("messages")
            body["prompt"] = rng.choice(prompts) if field == "messages" else "你好"
            body["echo"] = messages is None or rng.random() < 0.5
            if field in ("logprobs", "top_logprobs"):  # a count of 0 to 20 here
                body.pop(field)
                body["logprobs"] = rng.choice([21, -1, "x", True, 2.5])
        bodies.append((route, json.dumps(body, allow_nan=True).encode()))
    return bodies


def test_fuzzed_bad_requests_get_4xx_while_good_streams_finish(server, client):
    """A few hundred malformed and edge-case requests while good streams run: every bad one gets a 4xx at once,
    every stream ends with its whole answer and [DONE] (the openai client raises without it)."""

    def stream() -> str:
        chunks = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], max_tokens=LIMIT, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    statuses = []
    with ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream) for _ in range(6)]
        for route, raw in bad_bodies(300):
            request = urllib.request.Request(server.url + route, data=raw, method="POST")
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as err:
                statuses.append(err.code)
        answers = [s.result(timeout=120) for s in streams]
    assert answers == [ANSWER] * 6
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))


def test_thinking_can_be_switched_off_per_request(server, client, engine):
    """``chat_template_kwargs.enable_thinking: false`` (vLLM's switch; lm-eval's chat model sends it for thinking
    models): the prompt closes the thinking block, so everything generated is ``content``."""
    messages = [{"role": "user", "content": QUESTION}]
    assert engine.render(messages, {"enable_thinking": False}).rstrip().endswith("</think>")
    assert not engine.encode(messages, {"enable_thinking": False})[1] and engine.encode(messages)[1]
    off = ask(client, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    on = ask(client)
    assert on.choices[0].message.reasoning_content == THINKING
    assert getattr(off.choices[0].message, "reasoning_content", None) in (None, "")
