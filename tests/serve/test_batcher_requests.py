"""What a request may ask of the batcher beyond sampling: chunked prefill of long prompts, logprobs of the prompt and
of each generated token, presence / frequency penalties and logit bias, and several choices queued at once.

Every expectation is computed independently with the model's own forward pass or ``model.generate``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_batcher import GREEDY, QUESTIONS, Recorder, alone, prompt, run, sharp_engine

from medgspo.modeling.generation import SamplingOptions
from medgspo.serve.batcher import Batcher, Job, QueueFull
from medgspo.serve.sampling import LogitRules


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return sharp_engine(tiny_model_dir)


def long_prompt(engine, tokens: int) -> list[int]:
    """A prompt of about ``tokens`` tokens: many questions in one user message."""
    text = "；".join(QUESTIONS * 200)
    ids = engine.encode([{"role": "user", "content": text}])[0]
    return ids[:tokens]


def full_logprobs(engine, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits at every position of ``ids`` (one forward pass, no cache)."""
    with torch.no_grad():
        return torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(engine):
    ids = long_prompt(engine, 200)
    short = prompt(engine, QUESTIONS[1])
    batcher = Batcher(engine, max_batch_size=4, prefill_chunk=48)
    running = Recorder(batcher, short, SamplingOptions(temperature=0, max_new_tokens=24))
    run(batcher, 1)  # the short prompt: one prefill, it is decoding now
    long = Recorder(batcher, ids, SamplingOptions(temperature=0, max_new_tokens=6))
    decoded_before = len(running.result.token_ids) if running.result else None
    for _ in range(4):  # chunk, decode, chunk, decode
        run(batcher, 1)
    health = batcher.health()
    assert decoded_before is None and health["prefilling"] == 1 and health["steps"]["prefill_chunks"] == 2
    assert health["steps"]["decode"] == 2  # the running row kept decoding while the long prompt went in
    run(batcher)
    assert batcher.health()["steps"]["prefill_chunks"] == 5  # ceil(200 / 48)
    assert long.result.token_ids == alone(engine, ids, 6)  # chunked prefill gives the same tokens
    assert running.result.token_ids == alone(engine, short, 24)


def test_prompt_logprobs_equal_the_models_own(engine):
    ids = long_prompt(engine, 70)
    batcher = Batcher(engine, max_batch_size=4, prefill_chunk=32)  # three chunks
    outcome = []
    scoring = Job(ids, dataclasses.replace(GREEDY, max_new_tokens=1), on_done=outcome.append)
    scoring.prompt_logprobs = 3
    batcher.submit(scoring)
    run(batcher)
    expected = full_logprobs(engine, ids)
    got = outcome[0].prompt_logprobs
    assert got[0] is None and len(got) == len(ids)
    for position in (1, 31, 32, 33, 69):  # across chunk borders
        entry = got[position]
        assert entry.token_id == ids[position]
        assert entry.logprob == pytest.approx(float(expected[position - 1, ids[position]]), abs=1e-3)
        top = expected[position - 1].topk(3)
        assert [i for i, _ in entry.top] == top.indices.tolist()


def test_generated_logprobs_are_the_raw_distribution_at_each_step(engine):
    ids = prompt(engine, QUESTIONS[0])
    batcher = Batcher(engine, max_batch_size=4)
    rec = Recorder(batcher, ids, GREEDY)
    rec.job.logprobs = 2
    neighbour = Recorder(batcher, prompt(engine, QUESTIONS[2]))  # asks for none
    run(batcher)
    tokens = rec.result.token_ids
    expected = full_logprobs(engine, ids + tokens)[len(ids) - 1 : -1]
    assert len(rec.result.logprobs) == len(tokens) and neighbour.result.logprobs is None
    for step, (token, entry) in enumerate(zip(tokens, rec.result.logprobs, strict=True)):
        assert entry.token_id == token and len(entry.top) == 2
        assert entry.logprob == pytest.approx(float(expected[step, token]), abs=1e-3)
        assert entry.top[0][0] == token  # greedy: the chosen token is the most likely


def test_logit_bias_forces_or_forbids_a_token(engine):
    ids = prompt(engine, QUESTIONS[0])
    greedy = alone(engine, ids, 8)
    batcher = Batcher(engine, max_batch_size=4)
    forbid = Recorder(batcher, ids, GREEDY)
    forbid.job.rules = LogitRules(logit_bias=((greedy[0], -100.0),))
    force = Recorder(batcher, ids, dataclasses.replace(GREEDY, max_new_tokens=5))
    forced_token = 42
    force.job.rules = LogitRules(logit_bias=((forced_token, 100.0),))
    plain = Recorder(batcher, ids, GREEDY)
    run(batcher)
    assert forbid.result.token_ids[0] != greedy[0] and greedy[0] not in forbid.result.token_ids
    assert force.result.token_ids == [forced_token] * 5
    assert plain.result.token_ids == alone(engine, ids, 24)  # a neighbour's rules do not leak


@pytest.fixture(scope="module")
def flat_engine(tiny_model_dir):
    """The tiny model as initialised: its logits are nearly flat, so penalties change its choices."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgspo.data.chat_format import ChatFormat
    from medgspo.serve.engine import ChatEngine

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return ChatEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir), ChatFormat())


@pytest.mark.parametrize(("presence", "frequency"), [(0.5, 1.5), (0.0, 1.0)])
def test_penalties_follow_openais_formula(flat_engine, presence, frequency):
    """Each greedy step takes the argmax of ``logits - presence * (count > 0) - frequency * count`` so far (a
    greedy model here repeats one token, which the penalties break)."""
    engine = flat_engine
    ids = prompt(engine, QUESTIONS[3])
    batcher = Batcher(engine, max_batch_size=2)
    rec = Recorder(batcher, ids, dataclasses.replace(GREEDY, max_new_tokens=12))
    rec.job.rules = LogitRules(presence_penalty=presence, frequency_penalty=frequency)
    run(batcher)
    tokens = rec.result.token_ids
    logits_seen = []
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids + tokens])).logits[0, len(ids) - 1 : -1].float()
    counts: dict[int, int] = {}
    for step, token in enumerate(tokens):
        adjusted = logits[step].clone()
        for seen, times in counts.items():
            adjusted[seen] -= presence + frequency * times
        logits_seen.append(int(adjusted.argmax()))
        counts[token] = counts.get(token, 0) + 1
    assert tokens == logits_seen
    assert tokens != alone(engine, ids, 12)  # the rules changed something


def test_the_choices_of_one_request_are_queued_together_or_not_at_all(engine):
    ids = prompt(engine, QUESTIONS[0])
    batcher = Batcher(engine, max_batch_size=2, max_queue=1)
    batcher.submit_all([Job(ids, GREEDY), Job(ids, GREEDY)])
    with pytest.raises(QueueFull):
        batcher.submit_all([Job(ids, GREEDY), Job(ids, GREEDY)])  # only one place is left
    assert batcher.health()["queue"] == 2 and batcher.health()["requests"]["rejected"] == 1
