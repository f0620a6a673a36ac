"""The real Qwen3.5 tokenizer, offline: `medgspo qwen-tokenizer` writes a Hugging Face folder whose ids are the
`qwen_tokenizer` package's own, with Qwen3.5's special ids and our chat template; `data check --tokenizer` uses it."""

from __future__ import annotations

import pytest

from medgspo.cli import main
from medgspo.modeling.tiny_model import CHAT_TEMPLATE_FILE

QWEN_IDS = {
    "<|endoftext|>": 248044,
    "<|im_start|>": 248045,
    "<|im_end|>": 248046,
    "<think>": 248068,
    "</think>": 248069,
}
EDGE_TEXTS = [
    "",
    " ",
    "\n\n\n",
    "患者主诉：头痛3天，体温38.5℃，血压140/90mmHg。诊断：①高血压；②上呼吸道感染。",
    "Ⅱ、Ⅲ、aVF导联ST段抬高0.3 mV；HbA1c 7.8%；β₂-受体激动剂；μg/kg·min",
    "全角：ＡＢＣ１２３　，。！？【】《》“”",
    "e\u0301 cafe\u0301 n\u0303 \u1100\u1161\u11a8",  # NFC changes these
    "emoji 😀👨‍👩‍👧 🇨🇳 ❤️",
    "The patient's BP isn't 120/80; they'll re-check at 12:30.",
    "    indented\n\tcode  ",
    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n嗯。\n</think>\n\n答。<|im_end|>",
    "<|im_start|><|im_end|><think></think><tool_call>x</tool_call><|vision_start|><|image_pad|><|vision_end|>",
    "<|im_start",
    "< think>",
    "a" * 300,
    "哈" * 64,
]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen-tokenizer") / "tok"
    assert (
        main(["qwen-tokenizer", "--output", str(out)]) == 0
    )  # builds and compares with the package on the bundled texts
    return out


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_dir)


def test_ids_equal_the_package_encoder(qwen, bundled_records):
    from medgspo.modeling.qwen_tokenizer import compare_with_package
    from medgspo.modeling.tiny_model import corpus_texts

    result = compare_with_package(qwen, [*corpus_texts(bundled_records), *EDGE_TEXTS])
    assert result.n_mismatched == 0, result.mismatches
    assert result.texts == 3 * len(bundled_records) + len(EDGE_TEXTS) and result.tokens > 50_000


def test_vocabulary_and_special_tokens(qwen):
    assert len(qwen) == 248_044 + 33
    for token, expected in QWEN_IDS.items():
        assert qwen.convert_tokens_to_ids(token) == expected
        assert qwen(token, add_special_tokens=False)["input_ids"] == [expected]
    assert (qwen.eos_token, qwen.pad_token, qwen.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert qwen("发热", add_special_tokens=True)["input_ids"] == qwen("发热", add_special_tokens=False)["input_ids"]
    # <think> tags survive skip_special_tokens (as in Qwen's tokenizer.json), chat markers do not
    ids = qwen("<|im_start|>想</think>答<|im_end|>", add_special_tokens=False)["input_ids"]
    assert qwen.decode(ids, skip_special_tokens=True) == "想</think>答"


def test_our_qwen3_5_chat_template(qwen):
    from medgspo.data.chat_format import ChatFormat

    assert qwen.chat_template == CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")
    prompt = ChatFormat().render_prompt(qwen, "发热三天")
    assert prompt == "<|im_start|>user\n发热三天<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert qwen(prompt)["input_ids"][-2:] == [QWEN_IDS["<think>"], qwen.convert_tokens_to_ids("Ċ")]


def test_merges_recovered_from_ranks_by_hand():
    from medgspo.modeling.qwen_tokenizer import vocab_and_merges

    # "abc" can be made as a+bc or ab+c: both are merges, ordered by the merged token's rank, then by the parts'
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5}
    vocab, merges = vocab_and_merges(ranks)
    assert vocab == {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}
    assert merges == [("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c")]
    # bytes outside printable ASCII take GPT-2's stand-ins: a space is "Ġ"
    assert vocab_and_merges({b" ": 0, b"a": 1, b" a": 2}) == ({"Ġ": 0, "a": 1, "Ġa": 2}, [("Ġ", "a")])


def test_data_check_counts_tokens_with_it(qwen_dir, write_jsonl, capsys):
    long = {"Question": "发热？", "Complex_CoT": "很长的推理。" * 400, "Response": "肺炎。"}
    path = write_jsonl([{"Question": "患者发热三天？", "Complex_CoT": "考虑感染。", "Response": "肺炎。"}, long])
    assert main(["data", "check", str(path), "--tokenizer", str(qwen_dir), "--max_length", "256"]) == 0
    out = capsys.readouterr().out
    assert f"tokens per SFT example ({qwen_dir}, chat template applied)" in out
    assert "records over 256 tokens: 1" in out
    assert main(["data", "check", str(path), "--tokenizer", "./missing-tokenizer"]) == 2
    assert "--tokenizer './missing-tokenizer' cannot be loaded" in capsys.readouterr().err


def test_the_named_tokenizer_is_built_once(tmp_path, monkeypatch, qwen_dir):
    from medgspo.modeling import qwen_tokenizer

    built = []
    monkeypatch.setattr(qwen_tokenizer, "build_qwen_tokenizer", lambda path: built.append(path))
    monkeypatch.setattr(qwen_tokenizer, "DEFAULT_QWEN_TOKENIZER_DIR", qwen_dir)
    assert qwen_tokenizer.resolve_tokenizer_path("qwen3.5") == str(qwen_dir) and built == []  # already there
    assert qwen_tokenizer.ensure_qwen_tokenizer(tmp_path / "new") == tmp_path / "new" and built == [tmp_path / "new"]
