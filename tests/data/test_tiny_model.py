"""The embedded tiny model: Qwen3.5 architecture, Qwen special tokens and template, a normal HF model folder."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3_5ForCausalLM

from medgspo.cli import main
from medgspo.modeling.tiny_model import CHAT_TEMPLATE_FILE


def test_round_trip_loads_like_a_hub_model(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert isinstance(model, Qwen3_5ForCausalLM)
    assert set(model.config.layer_types) == {"linear_attention", "full_attention"}
    assert sum(p.numel() for p in model.parameters()) < 10_000_000
    assert model.config.vocab_size == len(tok)
    ids = tok("患者胸痛</think>", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))


def test_qwen_special_tokens(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for token in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"]:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == token
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # <think> tags survive skip_special_tokens (so completions can be split), chat markers do not.
    ids = tok("<|im_start|>想</think>答<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "想</think>答"


def test_template_is_the_qwen3_5_template_trl_knows(tiny_model_dir):
    from trl.chat_template_utils import qwen3_5_think_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template == CHAT_TEMPLATE_FILE.read_text(encoding="utf-8") == qwen3_5_think_chat_template


def test_tokenizer_compresses_chinese(tiny_model_dir, bundled_records):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = bundled_records[0]["Complex_CoT"]
    assert len(tok(text)["input_ids"]) < len(text)  # merges learned from the corpus, not one token per byte


def test_cli_writes_the_model(tmp_path, capsys):
    assert main(["tiny-model", "--output", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()
    assert str(tmp_path / "m") in capsys.readouterr().out
