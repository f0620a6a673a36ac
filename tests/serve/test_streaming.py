"""The streamed think/answer splitter: literal inputs, every chunking, hand-worked expected events."""

from __future__ import annotations

import random

import pytest

from medgspo.data.chat_format import split_completion
from medgspo.serve.streaming import (
    ANSWER,
    THINKING,
    ThinkSplitter,
    join_events,
    prompt_opens_thinking,
    split_stream,
    split_text,
)

WELL_FORMED = [
    "我先想一想。\n</think>\n\n诊断为肺炎。",
    "<think>\n首先排除心梗：心电图正常。\n其次考虑肺栓塞。\n</think>\n\n肺栓塞可能性大，应查CTPA。",
    "  发热 + 咳嗽 → 肺炎？\n\n再看血象。 </think>答案：社区获得性肺炎。<|im_end|>",
    "血压<90mmHg，心率>120次/分。\n</think>\n\n休克，立即补液。\n\n复查乳酸。",
]


def chunkings(text: str, rng: random.Random, n: int = 20) -> list[list[str]]:
    """Single characters, the whole text, and ``n`` random cuts."""
    result = [list(text), [text]]
    for _ in range(n):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 8))))
        result.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return result


@pytest.mark.parametrize("text", WELL_FORMED)
def test_every_chunking_gives_the_split_of_the_whole_text(text):
    expected = split_completion(text)
    assert expected.well_formed
    for pieces in chunkings(text, random.Random(text)):
        events = list(split_stream(pieces))
        assert join_events(events) == (expected.thinking, expected.answer), pieces
        assert all(piece for _, piece in events)  # never an empty event
        assert [kind for kind, _ in events] == sorted((kind for kind, _ in events), key=[THINKING, ANSWER].index)


def test_close_tag_cut_in_every_place():
    text = "想好了</think>答"
    for cut in range(len(text) + 1):
        assert join_events(split_stream([text[:cut], text[cut:]])) == ("想好了", "答"), cut


def test_events_as_pieces_arrive():
    splitter = ThinkSplitter()
    assert splitter.feed("我先") == [(THINKING, "我先")]
    assert splitter.feed("想。\n") == [(THINKING, "想。")]  # the newline waits: it may be trailing
    assert splitter.feed("</") == []  # may be the start of </think>
    assert splitter.feed("think>\n\n") == []  # the answer's leading whitespace is dropped
    assert splitter.feed("诊断\n\n为") == [(ANSWER, "诊断\n\n为")]
    assert splitter.feed("肺炎。\n") == [(ANSWER, "肺炎。")]
    assert splitter.flush() == []  # the final newline is trailing whitespace


def test_explicit_open_tag_in_thinking_is_dropped():
    assert split_text("<think>\n想\n</think>\n答") == ("想", "答")
    assert list(split_stream(["<thi", "nk>想</think>答"])) == [(THINKING, "想"), (ANSWER, "答")]


def test_starting_outside_the_thinking_block():
    assert split_text("直接回答。", start_in_thinking=False) == ("", "直接回答。")
    assert split_text("\n<think>\n想\n</think>\n\n答", start_in_thinking=False) == ("想", "答")
    # once the answer has started, a <think> is a stray tag, not a new thinking block
    assert split_text("答<think>案", start_in_thinking=False) == ("", "答案")


def test_no_close_tag_means_all_thinking():
    assert split_text("一直在想\n还在想\n") == ("一直在想\n还在想", "")
    assert split_text("") == ("", "")
    assert split_text("   \n ") == ("", "")


def test_empty_thinking_and_empty_answer():
    assert split_text("</think>\n\n答") == ("", "答")
    assert split_text("想</think>\n\n  \n") == ("想", "")


def test_first_close_tag_ends_the_thinking_and_later_tags_are_dropped():
    # chat_format.split_completion would take the text after the *last* tag; a stream cannot take back
    # what it already sent, so the stream (and the server) follows the reasoning-parser convention instead.
    assert split_text("想</think>答一</think>答二") == ("想", "答一答二")
    assert split_completion("想</think>答一</think>答二").answer == "答二"


def test_end_markers_are_never_emitted():
    pieces = ["想</think>答", "<|im_", "end|>", "<|endoftext|>"]
    assert list(split_stream(pieces)) == [(THINKING, "想"), (ANSWER, "答")]


def test_text_that_only_looks_like_a_tag_is_kept():
    assert list(split_stream(["血压<", "90mmHg"])) == [(THINKING, "血压"), (THINKING, "<90mmHg")]
    assert split_text("a </thinking b") == ("a </thinking b", "")
    splitter = ThinkSplitter()
    assert splitter.feed("结尾 </thi") == [(THINKING, "结尾")]
    assert splitter.flush() == [(THINKING, " </thi")]  # the stream ended before the tag completed


def test_feed_merges_events_of_one_piece():
    splitter = ThinkSplitter()
    assert splitter.feed("甲<think>乙</think>丙<|im_end|>") == [(THINKING, "甲乙"), (ANSWER, "丙")]


def test_custom_tags():
    splitter = ThinkSplitter(think_open="<reasoning>", think_close="</reasoning>")
    assert splitter.feed("想</reasoning>答") + splitter.flush() == [(THINKING, "想"), (ANSWER, "答")]


def test_prompt_opens_thinking():
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")
