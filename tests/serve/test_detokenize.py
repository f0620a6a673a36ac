"""Incremental detokenization (against the real tiny tokenizer) and stop strings (literal cases)."""

from __future__ import annotations

import random

import pytest

from medgspo.serve.detokenize import IncrementalDecoder, StopMatcher


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_pieces_join_to_the_whole_decode(tokenizer):
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    rng = random.Random(0)
    texts = ["患者发热咳嗽三天，最可能的诊断是什么？</think>\n\n诊断为肺炎。", "心电图 ST 段抬高 (STEMI) 🫀 100mg"]
    sequences = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    sequences += [[rng.randrange(len(tokenizer)) for _ in range(80)] for _ in range(20)]  # any tokens, byte pieces too
    for ids in sequences:
        decoder = IncrementalDecoder(decode)
        pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
        assert "".join(pieces) == decode(ids)


def test_a_character_split_over_tokens_waits_for_its_second_half():
    table = {(7,): "\ufffd", (7, 8): "肺", (8,): "\ufffd"}
    decoder = IncrementalDecoder(lambda ids: table.get(tuple(ids), ""))
    assert [decoder.add(7), decoder.add(8)] == ["", "肺"]


def test_an_unfinished_character_is_flushed_at_the_end():
    decoder = IncrementalDecoder(lambda ids: "\ufffd" if ids else "")
    assert [decoder.add(7), decoder.flush()] == ["", "\ufffd"]


@pytest.mark.parametrize(
    ("stops", "pieces", "sent", "text", "hit"),
    [
        (["。"], ["诊断为肺炎", "。其余"], ["诊断为肺炎", ""], "诊断为肺炎", True),
        (["END"], ["aE", "NxEN", "D!"], ["a", "ENx", ""], "aENx", True),  # a false start is released
        (["ab", "b"], ["xab"], ["x"], "x", True),  # the earliest stop wins
        (["</think>"], ["想</th", "ink>答"], ["想", ""], "想", True),
        (["<<"], ["a<", "b"], ["a", "<b"], "a<b", False),
        (["stop"], ["stop here"], [""], "", True),  # the very first text is a stop string
        (["\n\n"], ["一\n", "\n二"], ["一", ""], "一", True),
    ],
)
def test_stop_strings(stops, pieces, sent, text, hit):
    matcher = StopMatcher(stops)
    assert [matcher.feed(p) for p in pieces] == sent
    assert (matcher.text, matcher.hit) == (text, hit)
    assert "".join(sent) + matcher.flush() == text


def test_held_back_text_comes_out_when_the_stream_ends():
    matcher = StopMatcher(["。。"])
    assert matcher.feed("好。") == "好"
    assert matcher.flush() == "。"
    assert not matcher.hit
