"""Evaluation end to end on the tiny model with the offline reference judge, and the ``medgspo eval`` command."""

from __future__ import annotations

import argparse
import json

import pytest

from medgspo.eval.cli import add_arguments, default_name, resolve_models, run
from medgspo.eval.mcq import evaluate_mcq, load_mcq, run_mcq
from medgspo.eval.open_ended import evaluate_open, judge_rows, question_and_reference, run_eval
from medgspo.judge import JudgeConfig, make_judge

GEN = {"batch_size": 4, "max_new_tokens": 8, "show_progress": False}
ROW_KEYS = {"question", "reference", "completion", "thinking", "answer", "well_formed", "score", "error", "cached"}
SUMMARY_KEYS = {"n", "format_compliance", "mean_score", "score_ci_low", "score_ci_high", "tier_counts",
                "mean_think_chars", "mean_answer_chars", "judge_failures", "model", "adapter", "judge"}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models generate fastest on one thread (more threads only contend on a shared CPU); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lora_adapter(tiny_model_dir, tmp_path_factory):
    """A freshly initialised LoRA adapter on the tiny model (what `medgspo sft` saves, minus the training)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    path = tmp_path_factory.mktemp("adapters") / "sft"
    peft_model.save_pretrained(path)
    return path


def _reference_judge():
    return make_judge(JudgeConfig(backend="reference"))


# ---- judging rows (no model) ----------------------------------------------------------------------------------
def test_judge_rows_rules_and_reference_verdicts():
    question, reference = "转移性右下腹痛伴麦氏点压痛，最可能的诊断？", "急性阑尾炎。"

    def row(completion, answer, well_formed):
        return {"question": question, "reference": reference, "completion": completion, "answer": answer,
                "well_formed": well_formed}  # fmt: skip

    rows = [
        row("想一想\n</think>\n\n急性阑尾炎", "急性阑尾炎", True),  # identical to the reference: +2.0
        row(
            "想一想\n</think>\n\n今天天气很好，我们一起去公园散步吧。", "今天天气很好，我们一起去公园散步吧。", True
        ),  # 0.0
        row("想一想\n</think>\n\n可能是右半结肠的炎症性病变", "可能是右半结肠的炎症性病变", True),  # undecided: None
        row("只有思考，没有结束标签", "", False),  # -1.0 by rule
        row("想\n</think>\n\n</think>\n\n急性阑尾炎", "急性阑尾炎", False),  # several </think>: -1.0 by rule
    ]
    judge_rows(_reference_judge(), rows, show_progress=False)
    assert [r["score"] for r in rows] == [2.0, 0.0, None, -1.0, -1.0]
    assert [r["label"] for r in rows] == ["A", "C", None, "E", "E"]
    assert rows[2]["error"].startswith("undecided")
    assert rows[3]["judge_reason"] == "rule: no answer after </think>"
    assert rows[4]["judge_reason"] == "rule: malformed think/answer layout"
    assert all(r["cached"] is False for r in rows)


def test_judge_rows_with_an_api_judge_and_its_cache(tmp_path):
    from fake_openai_server import FakeOpenAIServer

    question, reference = "转移性右下腹痛伴麦氏点压痛，最可能的诊断？", "急性阑尾炎"
    answers = ["急性阑尾炎", "不是急性阑尾炎", "阑尾的急性炎症"]  # server rule: A, D, B

    def rows():
        judged = [{"question": question, "reference": reference, "completion": f"想\n</think>\n\n{a}", "answer": a,
                   "well_formed": True} for a in answers]  # fmt: skip
        return judged + [{"question": question, "reference": reference, "completion": "想", "answer": "",
                          "well_formed": False}]  # fmt: skip

    config = JudgeConfig(model="fake-judge", cache_path=str(tmp_path / "cache.sqlite"), max_retries=0)
    with FakeOpenAIServer() as server:
        config.base_url = server.base_url
        first = rows()
        judge_rows(make_judge(config, api_key="test-key"), first, show_progress=False)
        assert [r["score"] for r in first] == [2.0, -0.5, 0.5, -1.0]
        assert len(server.requests) == 3 and not any(r["cached"] for r in first)  # malformed: no request
        again = rows()
        judge_rows(make_judge(config, api_key="test-key"), again, show_progress=False)  # a new judge, same cache
        assert [r["score"] for r in again] == [2.0, -0.5, 0.5, -1.0]
        assert len(server.requests) == 3 and all(r["cached"] for r in again[:3])


def test_question_and_reference_accepts_both_schemas():
    assert question_and_reference({"Question": " 问？ ", "Response": "答。"}, 0) == ("问？", "答。")
    assert question_and_reference({"question": "问？", "reference": "答。"}, 1) == ("问？", "答。")
    with pytest.raises(ValueError, match="record 2"):
        question_and_reference({"Question": "问？"}, 2)


# ---- end to end on the tiny model -----------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_open_tiny_model(tiny_model_dir, bundled_records):
    summary, rows = evaluate_open(str(tiny_model_dir), None, bundled_records[:4], JudgeConfig(backend="reference"),
                                  **GEN)  # fmt: skip
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["n"] == 4 and len(rows) == 4
    assert summary["judged"] + summary["judge_failures"] == 4
    assert sum(summary["tier_counts"].values()) == summary["judged"]
    assert summary["judge"]["backend"] == "reference" and summary["max_new_tokens"] == 8
    for row, record in zip(rows, bundled_records[:4], strict=True):
        assert ROW_KEYS <= row.keys()
        assert row["question"] == record["Question"].strip() and row["reference"] == record["Response"].strip()
        assert 0 < row["n_tokens"] <= 8
        if not row["well_formed"]:
            assert row["score"] == -1.0


@pytest.mark.slow
def test_run_eval_writes_every_file(tiny_model_dir, lora_adapter, bundled_records, tmp_path):
    models = [("base", str(tiny_model_dir), None), ("sft", str(tiny_model_dir), str(lora_adapter))]
    summaries = run_eval(models, bundled_records[:3], None, tmp_path, seed=1, **GEN)
    assert list(summaries) == ["base", "sft"]
    assert summaries["sft"]["adapter"] == str(lora_adapter)
    lines = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["model"] for line in lines] == ["base"] * 3 + ["sft"] * 3
    assert all(ROW_KEYS <= line.keys() for line in lines)
    saved = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert saved.keys() == {"base", "sft"} and SUMMARY_KEYS <= saved["base"].keys()
    table = (tmp_path / "eval.md").read_text(encoding="utf-8")
    assert "| model | n | format compliance | mean score [95% CI]" in table
    assert "\n| base | 3 |" in table and "\n| sft | 3 |" in table
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unique"):
        run_eval([("a", "tiny", None), ("a", "tiny", None)], bundled_records[:1], None, tmp_path, **GEN)


@pytest.mark.slow
def test_evaluate_and_run_mcq(tiny_model_dir, tmp_path):
    items = load_mcq().items[:4]
    summary, rows = evaluate_mcq(str(tiny_model_dir), None, items, **GEN)
    assert summary["n"] == 4 and 0 <= summary["correct"] <= 4
    assert {"accuracy", "ci_low", "ci_high", "no_choice", "format_compliance", "per_subject"} <= summary.keys()
    assert sum(s["n"] for s in summary["per_subject"].values()) == 4
    for row, item in zip(rows, items, strict=True):
        assert row["gold"] == item.answer and row["correct"] == (row["prediction"] == item.answer)
        assert row["prediction"] is None or row["prediction"] in item.letters
    summaries = run_mcq([("tiny", str(tiny_model_dir), None)], items[:2], tmp_path, **GEN)
    assert summaries["tiny"]["n"] == 2
    assert len((tmp_path / "mcq_generations.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert json.loads((tmp_path / "mcq.json").read_text(encoding="utf-8"))["tiny"]["n"] == 2
    assert "| tiny | 2 |" in (tmp_path / "mcq.md").read_text(encoding="utf-8")


# ---- the command ----------------------------------------------------------------------------------------------
def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medgspo eval")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        _args("--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--adapter", "--name", "--task", "--data", "--limit", "--output-dir", "--judge-backend",
                 "--judge-base-url", "--judge-model", "--judge-concurrency", "--judge-cache", "--api-key-env",
                 "--batch-size", "--max-new-tokens", "--sample", "--seed"):  # fmt: skip
        assert flag in out


def test_resolve_models():
    assert resolve_models(None, None, None) == [("tiny", "tiny", None)]
    assert resolve_models(["m1", "m2"], ["none", "runs/gspo/"], None) == [
        ("m1", "m1", None),
        ("gspo", "m2", "runs/gspo/"),
    ]
    assert resolve_models(["tiny"], ["a/sft", "b/sft"], None) == [
        ("sft", "tiny", "a/sft"),
        ("sft (2)", "tiny", "b/sft"),
    ]
    assert resolve_models(["x", "y"], None, ["base", "big"]) == [("base", "x", None), ("big", "y", None)]
    with pytest.raises(ValueError, match="--adapter is given 3 times but --model 2 times"):
        resolve_models(["x", "y"], ["a", "b", "c"], None)
    with pytest.raises(ValueError, match="--name"):
        resolve_models(["x", "y"], None, ["only-one"])
    with pytest.raises(ValueError, match="unique"):
        resolve_models(["x", "y"], None, ["same", "same"])
    assert default_name("/abs/path/model", None) == "model"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--limit", "0"), "--limit must be >= 1"),
        (("--batch-size", "0"), "--batch-size must be >= 1"),
        (("--adapter", "/no/such/adapter"), "--adapter /no/such/adapter: not a folder with adapter_config.json"),
        (("--model", "./no/such/model"), "--model ./no/such/model: no such folder"),
        (("--model", "a", "--model", "b", "--adapter", "x", "--adapter", "y", "--adapter", "z"), "--adapter is given"),
        (("--judge-backend", "local"), "--judge-backend local needs --judge-model"),
        (("--task", "mcq", "--data", "/no/such/items.jsonl"), "/no/such/items.jsonl: <path>: no such file"),
    ],
)
def test_user_mistakes_end_in_one_line_errors(argv, message, capsys, tmp_path):
    assert run(_args(*argv, "--output-dir", str(tmp_path), "--no-progress")) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgspo eval: error: ") and message in err and err.count("\n") == 1


def test_missing_judge_key_stops_before_generation(write_jsonl, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MEDGSPO_TEST_NO_KEY", raising=False)
    data = write_jsonl([{"Question": "问？", "Complex_CoT": "想。", "Response": "答。"}])
    args = _args("--data", str(data), "--judge-backend", "openai", "--api-key-env", "MEDGSPO_TEST_NO_KEY",
                 "--model", "./no-model-needed", "--output-dir", str(tmp_path))  # fmt: skip
    args.model = ["tiny-not-loaded"]  # would fail to load: proves the judge fails first
    assert run(args) == 3
    assert "MEDGSPO_TEST_NO_KEY" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_mcq_end_to_end(tiny_model_dir, capsys, tmp_path):
    code = run(_args("--task", "mcq", "--model", str(tiny_model_dir), "--limit", "2", "--max-new-tokens", "4",
                     "--output-dir", str(tmp_path), "--no-progress"))  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| model | n | accuracy [95% CI]" in out
    assert str(tmp_path / "mcq.md") in out and (tmp_path / "mcq_generations.jsonl").is_file()


@pytest.mark.slow
def test_cli_open_end_to_end(tiny_model_dir, write_jsonl, capsys, tmp_path):
    data = write_jsonl([{"Question": f"问题{i}？", "Complex_CoT": "想。", "Response": "答。"} for i in range(3)])
    code = run(_args("--data", str(data), "--model", str(tiny_model_dir), "--name", "tiny", "--limit", "2",
                     "--max-new-tokens", "4", "--output-dir", str(tmp_path / "out"), "--no-progress"))  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| tiny | 2 |" in out and str(tmp_path / "out" / "eval.png") in out
    assert len((tmp_path / "out" / "generations.jsonl").read_text(encoding="utf-8").splitlines()) == 2
