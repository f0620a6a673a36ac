"""The continuous batcher, driven step by step: joins, early leaves, per-row options, stops, seeds, cancelling.

Greedy rows must give exactly the tokens ``model.generate`` gives for the prompt alone. The tiny model is random, so
its weights are scaled up here until greedy decoding wanders over many tokens instead of repeating one.
"""

from __future__ import annotations

import threading

import pytest
import torch
from test_chat import QUESTION, memorized_adapter

from medgspo.data.chat_format import ChatFormat
from medgspo.modeling.generation import SamplingOptions
from medgspo.serve import kvcache
from medgspo.serve.batcher import Batcher, Job, QueueFull
from medgspo.serve.engine import ChatEngine

QUESTIONS = [
    "患者发热咳嗽三天，最可能的诊断是什么？",
    "头痛伴呕吐",
    "胸痛三小时，出汗，心电图ST段抬高，最可能的诊断？",
    "腹痛",
]
GREEDY = SamplingOptions(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> ChatEngine:
    return sharp_engine(tiny_model_dir)


def sharp_engine(tiny_model_dir) -> ChatEngine:
    """The tiny model with its weights scaled up: greedy decoding wanders instead of repeating one token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(8.0)  # sharper logits: varied greedy output
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    return ChatEngine(model, tokenizer, ChatFormat())


def prompt(engine: ChatEngine, question: str) -> list[int]:
    return engine.encode(engine.question_messages(question))[0]


def alone(engine: ChatEngine, ids: list[int], max_new_tokens: int) -> list[int]:
    """What ``model.generate`` gives for one prompt, greedy."""
    out = engine.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=engine.tokenizer.pad_token_id,
    )
    return out[0, len(ids) :].tolist()


class Recorder:
    """A job's streamed pieces and outcome, and the batcher step at which it ended."""

    def __init__(self, batcher: Batcher, ids: list[int], options=GREEDY, stop=()) -> None:
        self.pieces: list[str] = []
        self.result = None
        self.batcher = batcher
        self.job = batcher.submit(Job(ids, options, stop, on_text=self.pieces.append, on_done=self._done))
        self.ended_at = None

    def _done(self, outcome) -> None:
        self.result = outcome
        self.ended_at = self.batcher.stats.prefills + self.batcher.stats.decode_steps


def run(batcher: Batcher, steps: int | None = None) -> None:
    for _ in range(steps if steps is not None else 10_000):
        if not batcher.step():
            return


def test_greedy_rows_match_generate_with_joins_and_early_leaves(engine):
    ids = [prompt(engine, q) for q in QUESTIONS]
    lengths = [24, 5, 17, 11]  # each row its own max_tokens
    expected = [alone(engine, i, n) for i, n in zip(ids, lengths, strict=True)]
    assert len({tuple(e[:5]) for e in expected}) > 1 and len(set(expected[0])) > 5  # the model is not degenerate
    batcher = Batcher(engine, max_batch_size=8)
    first = [Recorder(batcher, ids[i], SamplingOptions(temperature=0, max_new_tokens=lengths[i])) for i in (0, 1)]
    run(batcher, 4)  # prefill of two, then three decode steps
    later = [Recorder(batcher, ids[i], SamplingOptions(temperature=0, max_new_tokens=lengths[i])) for i in (2, 3)]
    assert batcher.health()["batch_size"] == 2 and batcher.health()["queue"] == 2
    run(batcher, 1)
    assert batcher.health()["batch_size"] == 4  # they joined the running batch
    run(batcher)
    recorders = first + later
    for rec, want in zip(recorders, expected, strict=True):
        assert rec.result.token_ids == want
        assert rec.result.text == engine.decode(want) == "".join(rec.pieces)
        assert rec.result.finish_reason == "length" and rec.result.completion_tokens == len(want)
    assert recorders[1].ended_at < recorders[3].ended_at < recorders[2].ended_at < recorders[0].ended_at
    assert batcher.health()["largest_batch"] == 4 and batcher.health()["batch_size"] == 0


def test_sampled_rows_do_not_change_a_greedy_neighbour(engine):
    ids = [prompt(engine, q) for q in QUESTIONS]
    batcher = Batcher(engine, max_batch_size=8)
    greedy = Recorder(batcher, ids[0])
    sampled = [Recorder(batcher, i, SamplingOptions(max_new_tokens=24)) for i in ids[1:]]  # the card's sampling
    run(batcher)
    assert greedy.result.token_ids == alone(engine, ids[0], 24)
    assert all(r.result.completion_tokens >= 1 for r in sampled)


def test_a_seed_gives_the_same_answer_in_any_batch(engine):
    ids = [prompt(engine, q) for q in QUESTIONS]
    seeded = SamplingOptions(temperature=1.0, max_new_tokens=20, seed=7)
    batcher = Batcher(engine, max_batch_size=8)
    solo = Recorder(batcher, ids[0], seeded)
    run(batcher)
    crowd = [Recorder(batcher, i, SamplingOptions(max_new_tokens=20)) for i in ids[1:]]
    again = Recorder(batcher, ids[0], seeded)
    run(batcher)
    assert again.result.token_ids == solo.result.token_ids
    other = Recorder(batcher, ids[0], SamplingOptions(temperature=1.0, max_new_tokens=20, seed=8))
    run(batcher)
    assert other.result.token_ids != solo.result.token_ids and crowd[0].result is not None


def test_stop_strings_end_a_row_without_the_stop_text(engine):
    ids = prompt(engine, QUESTIONS[0])
    full = engine.decode(alone(engine, ids, 24))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = full[: full.index(stop)]
    batcher = Batcher(engine, max_batch_size=4)
    stopped = Recorder(batcher, ids, stop=("never-there", stop))
    neighbour = Recorder(batcher, ids)
    run(batcher)
    assert stopped.result.text == cut == "".join(stopped.pieces)
    assert stopped.result.finish_reason == "stop" and stop not in "".join(stopped.pieces)
    assert stopped.ended_at < neighbour.ended_at and neighbour.result.text == full


def test_cancelled_jobs_leave_and_waiting_ones_are_dropped(engine):
    ids = prompt(engine, QUESTIONS[0])
    batcher = Batcher(engine, max_batch_size=1, max_queue=2)
    running, waiting, last = (Recorder(batcher, ids) for _ in range(3))
    run(batcher, 3)
    running.job.cancel()
    waiting.job.cancel()
    run(batcher, 1)
    assert running.result.finish_reason == waiting.result.finish_reason == "cancelled"
    assert batcher.health()["batch_size"] == 1 and batcher.health()["queue"] == 0
    run(batcher)
    assert last.result.token_ids == alone(engine, ids, 24)
    assert batcher.health()["requests"]["cancelled"] == 2


def test_a_full_queue_refuses_with_a_retry_delay(engine):
    ids = prompt(engine, QUESTIONS[1])
    batcher = Batcher(engine, max_batch_size=1, max_queue=1)
    Recorder(batcher, ids)
    Recorder(batcher, ids)
    with pytest.raises(QueueFull) as full:
        Recorder(batcher, ids)
    assert full.value.retry_after >= 1
    run(batcher)
    Recorder(batcher, ids)  # room again
    assert batcher.health()["requests"]["rejected"] == 1


def test_without_joinable_cache_new_rows_wait_for_an_empty_batch(engine, monkeypatch):
    monkeypatch.setattr(kvcache, "can_join", lambda cache: False)
    ids = [prompt(engine, q) for q in QUESTIONS[:2]]
    batcher = Batcher(engine, max_batch_size=8)
    first = Recorder(batcher, ids[0])
    run(batcher, 2)
    second = Recorder(batcher, ids[1])
    run(batcher, 3)
    assert batcher.health()["batch_size"] == 1 and batcher.health()["queue"] == 1
    run(batcher)
    assert first.result.token_ids == alone(engine, ids[0], 24)
    assert second.result.token_ids == alone(engine, ids[1], 24)


def test_a_failing_step_fails_its_requests_and_the_batcher_goes_on(engine, monkeypatch):
    ids = prompt(engine, QUESTIONS[1])
    real = kvcache.prefill

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    batcher = Batcher(engine, max_batch_size=4).start()
    try:
        monkeypatch.setattr(kvcache, "prefill", out_of_memory)
        done = []
        event = threading.Event()
        batcher.submit(Job(ids, GREEDY, on_done=lambda o: (done.append(o), event.set())))
        assert event.wait(30) and isinstance(done[0], RuntimeError)
        monkeypatch.setattr(kvcache, "prefill", real)
        event.clear()
        batcher.submit(Job(ids, GREEDY, on_done=lambda o: (done.append(o), event.set())))
        assert event.wait(30) and done[1].token_ids == alone(engine, ids, 24)
        assert batcher.health()["requests"]["failed"] == 1
    finally:
        batcher.close()


def test_adapter_rows_match_generate(tiny_model_dir, tmp_path_factory):
    adapter = memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")
    engine = ChatEngine.load(str(tiny_model_dir), adapter)  # a PEFT-wrapped model
    ids = [prompt(engine, QUESTION), prompt(engine, QUESTIONS[1])]
    batcher = Batcher(engine, max_batch_size=4)
    first = Recorder(batcher, ids[0])
    run(batcher, 2)
    second = Recorder(batcher, ids[1])
    run(batcher)
    assert first.result.token_ids == alone(engine, ids[0], 24)
    assert second.result.token_ids == alone(engine, ids[1], 24)
    assert first.result.finish_reason == "stop"  # the memorised answer ends with <|im_end|>


def test_a_request_that_fails_while_sampling_fails_alone(engine):
    """One row's bad settings (past the server's checks) end that request with its error; its neighbours finish
    exactly as they would alone, and the batcher goes on."""
    from medgspo.modeling.generation import SamplingOptions

    ids = prompt(engine, QUESTIONS[0])
    batcher = Batcher(engine, max_batch_size=4)
    good = [Recorder(batcher, ids) for _ in range(2)]
    bad_top_k = Recorder(batcher, ids, SamplingOptions(temperature=1.0, top_k=2**63, max_new_tokens=24))
    bad_seed = Recorder(batcher, ids, SamplingOptions(temperature=1.0, seed=2**64, max_new_tokens=24))
    run(batcher)
    assert isinstance(bad_top_k.result, Exception) and isinstance(bad_seed.result, Exception)
    assert all(r.result.token_ids == alone(engine, ids, 24) for r in good)
    assert batcher.stats.failed == 2 and batcher.stats.completed == 2
