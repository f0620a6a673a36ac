"""``medgspo serve`` honours what a client asks for: logprobs, penalties and logit bias, ``n`` choices, the completions
endpoint (text or token-id prompts, ``echo``, ``logprobs``), server-wide chat template keywords, chunked prefill of a
long prompt while short requests go on, and socket timeouts. A real server on 127.0.0.1; expectations come from the
model's own forward pass."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch
from openai import OpenAI
from test_chat import ANSWER, QUESTION, THINKING
from test_serve import LIMIT, MODEL_ID, ask, http, memorized_engine, openai_client

from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory) -> ChatEngine:
    return memorized_engine(tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def server(engine):
    config = ServerConfig(MODEL_ID, max_tokens_limit=64, prefill_chunk=256, keepalive_timeout=1.0)
    with BackgroundServer(create_app(engine, config)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return openai_client(server)


def model_logprobs(engine: ChatEngine, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


# ---- chat: logprobs, n, penalties ----------------------------------------------------------------------------------
def test_chat_logprobs_cover_every_generated_token(client, engine):
    completion = ask(client, logprobs=True, top_logprobs=2, temperature=0)
    choice = completion.choices[0]
    entries = choice.logprobs.content
    assert choice.message.content == ANSWER and choice.message.reasoning_content == THINKING
    assert len(entries) == completion.usage.completion_tokens
    text = b"".join(bytes(e.bytes) for e in entries).decode("utf-8", errors="replace")
    assert THINKING in text and ANSWER in text  # the reasoning's tokens and the answer's, in order
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in entries)
    prompt = engine.encode([{"role": "user", "content": QUESTION}])[0]
    generated = [engine.tokenizer.convert_tokens_to_ids(engine.tokenizer.tokenize(e.token))[0] for e in entries[:3]]
    expected = model_logprobs(engine, prompt + generated)
    for step, (token, entry) in enumerate(zip(generated, entries[:3], strict=True)):
        assert entry.logprob == pytest.approx(float(expected[len(prompt) - 1 + step, token]), abs=1e-3)


def test_streamed_logprobs_arrive_with_their_text(client):
    chunks = list(ask(client, logprobs=True, stream=True, stream_options={"include_usage": True}))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert len(entries) == chunks[-1].usage.completion_tokens
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].logprobs:  # a chunk's logprobs come with text (or the final chunk)
            delta = chunk.choices[0].delta
            assert delta.content or getattr(delta, "reasoning_content", None) or chunk.choices[0].finish_reason


def test_n_choices_each_with_its_own_seed(client):
    sampled = {"n": 3, "seed": 5, "temperature": 1.5, "top_p": 1.0, "extra_body": {"top_k": 0}, "logprobs": True}
    first, again = ask(client, **sampled), ask(client, **sampled)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message for c in first.choices] == [c.message for c in again.choices]  # reproducible
    texts = {(c.message.reasoning_content, c.message.content) for c in first.choices}
    assert len(texts) > 1  # seed, seed + 1, seed + 2: different draws
    assert first.usage.completion_tokens == sum(len(c.logprobs.content) for c in first.choices)  # every choice's
    streamed = list(ask(client, n=2, stream=True, temperature=0))
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason}
    answers = {
        i: "".join(c.choices[0].delta.content or "" for c in streamed if c.choices[0].index == i) for i in (0, 1)
    }
    assert finished == {0: "stop", 1: "stop"} and answers == {0: ANSWER, 1: ANSWER}


def test_logit_bias_and_penalties_change_the_answer(client, engine):
    plain = ask(client, temperature=0)
    first = engine.encode([{"role": "user", "content": QUESTION}])[0]
    token = model_logprobs(engine, first)[-1].argmax().item()  # the memorised first token
    banned = ask(client, temperature=0, logit_bias={str(token): -100})
    assert (banned.choices[0].message.reasoning_content, banned.choices[0].message.content) != (
        plain.choices[0].message.reasoning_content,
        plain.choices[0].message.content,
    )
    assert ask(client, temperature=0, presence_penalty=0.0, frequency_penalty=0.0).choices[0].message.content == ANSWER


def test_a_server_wide_template_keyword_switches_thinking_off(engine):
    config = ServerConfig(MODEL_ID, max_tokens_limit=LIMIT, default_chat_template_kwargs={"enable_thinking": False})
    with BackgroundServer(create_app(engine, config)) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        off = ask(client)
        on = ask(client, extra_body={"chat_template_kwargs": {"enable_thinking": True}})  # a request overrides
    assert getattr(off.choices[0].message, "reasoning_content", None) in (None, "")
    assert on.choices[0].message.reasoning_content == THINKING


# ---- /v1/completions -----------------------------------------------------------------------------------------------
def test_completions_continue_raw_text_greedily(client, engine):
    text = "患者发热咳嗽三天，"
    completion = client.completions.create(model=MODEL_ID, prompt=text, max_tokens=6, temperature=0)
    ids = engine.encode_text(text)
    with torch.no_grad():
        out = engine.model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)
    assert completion.object == "text_completion" and completion.choices[0].text == engine.decode(
        out[0, len(ids) :].tolist()
    )
    assert completion.usage.prompt_tokens == len(ids)


def test_echo_with_logprobs_scores_every_prompt_token(client, engine):
    """What lm-eval's local-completions sends for a multiple-choice question: token ids, echo, logprobs=1,
    max_tokens=1. Each prompt token's logprob is the model's, the first has none."""
    prompts = [engine.encode_text("胸痛三小时，出汗，最可能是心肌梗死"), engine.encode_text("头痛伴呕吐")]
    body = {"model": MODEL_ID, "prompt": prompts, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    status, completion = http(client.base_url.__str__().rstrip("/") + "/completions", body)
    assert status == 200 and [c["index"] for c in completion["choices"]] == [0, 1]
    for ids, choice in zip(prompts, completion["choices"], strict=True):
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(ids) + 1 and logprobs["token_logprobs"][0] is None
        expected = model_logprobs(engine, ids)
        for position in range(1, len(ids)):
            assert logprobs["token_logprobs"][position] == pytest.approx(
                float(expected[position - 1, ids[position]]), abs=1e-3
            )
            greedy = int(expected[position - 1].argmax()) == ids[position]
            assert (logprobs["token_logprobs"][position] == max(logprobs["top_logprobs"][position].values())) == greedy
        assert choice["text"].startswith(engine.tokenizer.decode(ids))
    assert completion["usage"]["prompt_tokens"] == sum(map(len, prompts))


def test_streamed_completions_and_their_errors(client, server):
    chunks = list(client.completions.create(model=MODEL_ID, prompt="头痛", max_tokens=5, temperature=0, stream=True))
    whole = client.completions.create(model=MODEL_ID, prompt="头痛", max_tokens=5, temperature=0)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    bad = {
        "no prompt": ({}, "prompt"),
        "empty prompt": ({"prompt": ""}, "prompt[0]"),
        "id out of vocabulary": ({"prompt": [1, 10**7]}, "prompt[0]"),
        "mixed list": ({"prompt": ["a", 5]}, "prompt[1]"),
        "logprobs over 20": ({"prompt": "a", "logprobs": 21}, "logprobs"),
        "best_of": ({"prompt": "a", "best_of": 3}, "best_of"),
        "suffix": ({"prompt": "a", "suffix": "b"}, "suffix"),
    }
    for name, (extra, param) in bad.items():
        status, error = http(server.url + "/v1/completions", {"model": MODEL_ID, **extra})
        assert status == 400 and error["error"]["param"] == param, (name, error)


# ---- long prompts and sockets ------------------------------------------------------------------------------------
def test_a_short_request_is_answered_while_a_maximum_length_prompt_is_prefilled(client, server, engine):
    """The long prompt goes in 256 tokens per forward pass, between decode steps: a short request sent while it is
    prefilled finishes first."""
    context = engine.model.config.max_position_embeddings
    long_ids = (engine.encode_text("胸痛发热咳嗽头痛" * 2000) * 2)[: context - 2]
    done: list[str] = []

    def long_request() -> None:
        body = {"model": MODEL_ID, "prompt": long_ids, "max_tokens": 1, "temperature": 0}
        assert http(server.url + "/v1/completions", body)[0] == 200
        done.append("long")

    before = http(server.url + "/health")[1]["steps"]["prefill_chunks"]
    thread = threading.Thread(target=long_request)
    thread.start()
    while http(server.url + "/health")[1]["prefilling"] == 0 and not done:
        time.sleep(0.001)
    assert ask(client, max_tokens=2).choices[0].finish_reason == "length"
    done.append("short")
    thread.join(timeout=120)
    after = http(server.url + "/health")[1]["steps"]["prefill_chunks"]
    assert done == ["short", "long"] and after - before == -(-len(long_ids) // 256)


def test_headers_must_arrive_in_time_and_idle_connections_close(server):
    host, port = server.url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    slow.settimeout(10)
    assert slow.recv(100) == b""  # closed after keepalive_timeout (1 s here)
    idle = socket.create_connection((host, int(port)))
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    idle.settimeout(10)
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    assert idle.recv(100) == b""  # the kept-alive connection, idle, is closed too
    assert http(server.url + "/health")[0] == 200  # and the server goes on
