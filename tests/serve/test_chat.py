"""``medgspo chat``: streamed thinking/answer output with the tiny model and a LoRA adapter made in the test.

The adapter is trained for a few steps to answer :data:`QUESTION` with exactly ``<think>`` :data:`THINKING`
``</think>`` :data:`ANSWER`: its final norm is scaled up so the memorised tokens get almost all the probability, so even
the card's sampling (top_p 0.95) reproduces them. The base model alone produces noise, so the adapter visibly
matters. :func:`memorized_adapter` is shared with the serving and web tests (built once per session).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from medgspo.cli import main
from medgspo.modeling.generation import SamplingOptions
from medgspo.serve import chat
from medgspo.serve.chat import SectionPrinter
from medgspo.serve.cli import ChatArguments
from medgspo.serve.engine import ChatEngine, GenerationResult

QUESTION = "患者发热咳嗽三天，最可能的诊断是什么？"
THINKING = "我先想一想。"
ANSWER = "诊断为肺炎。"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "in_proj_qkv", "out_proj"]


def memorized_adapter(model_dir: Path, out_dir: Path) -> Path:
    """A LoRA adapter (plus a scaled final norm) that answers QUESTION with THINKING/ANSWER; cached in ``out_dir``."""
    if (out_dir / "adapter_config.json").is_file():
        return out_dir
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgspo.data.chat_format import ChatFormat

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = ChatFormat()
    prompt = tokenizer(fmt.render_prompt(tokenizer, QUESTION), add_special_tokens=False)["input_ids"]
    target = fmt.assistant_content(THINKING, ANSWER).removeprefix("<think>\n") + "<|im_end|>"
    completion = tokenizer(target, add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, modules_to_save=["model.norm"]
    )
    model = get_peft_model(base, config)
    model.base_model.model.model.norm.modules_to_save["default"].weight.data.fill_(15.0)  # sharpen the logits
    ids = torch.tensor([prompt + completion])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 38-token batch: threads only contend with each other
    try:
        for _ in range(80):
            loss = model(input_ids=ids, labels=labels).loss
            if loss.item() < 0.01:
                break
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.05, f"the test adapter did not memorise its answer (loss {loss.item():.3f})"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    fmt.save(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")


@pytest.fixture(scope="module")
def engine(tiny_model_dir, adapter_dir) -> ChatEngine:
    return ChatEngine.load(str(tiny_model_dir), adapter_dir)


def run_chat(argv: list[str]) -> int:
    return main(["chat", *argv])


def test_one_shot_streams_thinking_then_answer(tiny_model_dir, adapter_dir, capsys):
    argv = [QUESTION, "--model", str(tiny_model_dir), "--adapter", str(adapter_dir), "--max-new-tokens", "16"]
    assert run_chat(argv) == 0
    out = capsys.readouterr().out
    assert out == f"[思考]\n{THINKING}\n\n[回答]\n{ANSWER}\n"  # no ANSI codes: stdout is not a terminal


def test_pieces_arrive_token_by_token(engine):
    pieces: list[str] = []
    result = engine.generate(engine.question_messages(QUESTION), SamplingOptions(max_new_tokens=16), pieces.append)
    assert len(pieces) >= 5  # streamed, not one block at the end
    assert "".join(pieces) == result.text == f"{THINKING}\n</think>\n\n{ANSWER}"
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 13  # 12 text tokens + <|im_end|>


def test_adapter_matters(tiny_model_dir, capsys):
    argv = [QUESTION, "--model", str(tiny_model_dir), "--temperature", "0", "--max-new-tokens", "8"]
    assert run_chat(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("[思考]\n") and ANSWER not in out
    assert "8 个 token 内没有结束思考" in out  # hit the limit while still thinking


def test_interactive_reads_until_exit(tiny_model_dir, adapter_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTION}\n\n{QUESTION}\n/exit\n不会被回答\n"))
    argv = ["--model", str(tiny_model_dir), "--adapter", str(adapter_dir), "--max-new-tokens", "16", "--seed", "1"]
    assert run_chat(argv) == 0
    assert capsys.readouterr().out.count(f"[回答]\n{ANSWER}\n") == 2


def test_repl_stops_at_end_of_input(engine):
    out = io.StringIO()
    assert chat.repl(engine, SamplingOptions(max_new_tokens=16), io.StringIO(QUESTION), out, color=False) == 0
    assert out.getvalue().endswith(f"[回答]\n{ANSWER}\n")


def test_terminal_output_dims_the_thinking():
    out = io.StringIO()
    printer = SectionPrinter(out, color=True)
    for piece in ["想", "一想\n</th", "ink>\n\n答案"]:
        printer.feed(piece)
    printer.finish(None)
    assert out.getvalue() == "[思考]\n\x1b[2m想一想\x1b[0m\n\n[回答]\n答案\n"


def test_missing_answer_is_explained():
    out = io.StringIO()
    printer = SectionPrinter(out, color=False)
    printer.feed("一直在想")
    printer.finish(GenerationResult("一直在想", 10, 5, "stop"))
    assert out.getvalue() == "[思考]\n一直在想\n\n[回答]\n（模型没有给出回答）\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["q", "--temperature", "3"], "--temperature must be between 0 and 2"),
        (["q", "--top-p", "0"], "--top_p must be in (0, 1]"),
        (["q", "--top_k", "-1"], "--top_k must be between 0 and"),
        (["q", "--max-new-tokens", "0"], "--max_new_tokens must be >= 1"),
        (["  "], "the question is empty"),
        (["q", "--model", "./no/such/model"], "model folder not found: ./no/such/model"),
        (["q", "--adapter", "no-such-adapter"], "adapter folder not found"),
    ],
)
def test_user_mistakes_are_one_line_errors(argv, message, capsys):
    assert run_chat(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_folder_without_adapter_config_is_rejected(tmp_path, capsys):
    assert run_chat(["q", "--adapter", str(tmp_path)]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err


def test_sampling_options_map_to_generate_kwargs():
    assert SamplingOptions().generate_kwargs() == {
        "max_new_tokens": 512,
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 20,
    }
    assert SamplingOptions(temperature=0, max_new_tokens=8).generate_kwargs() == {
        "max_new_tokens": 8,
        "do_sample": False,
    }


def test_chat_flags_default_to_the_card_sampling():
    assert ChatArguments().sampling() == SamplingOptions()


@pytest.mark.parametrize("flag", ["--max-new-tokens", "--max_new_tokens"])
def test_both_flag_spellings_work(flag, tiny_model_dir, capsys):
    argv = [QUESTION, "--model", str(tiny_model_dir), "--temperature", "0", flag, "4"]
    assert run_chat(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("[思考]\n") and "4 个 token 内没有结束思考" in out  # stopped by the 4-token limit
