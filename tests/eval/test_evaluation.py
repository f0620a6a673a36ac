"""Evaluation end to end on the tiny model with the offline reference judge, and the ``medgspo eval`` command."""

from __future__ import annotations

import asyncio
import json

import pytest

from medgspo.cli import main
from medgspo.eval.benchmarks import load_benchmarks
from medgspo.eval.cli import default_name, resolve_models
from medgspo.eval.mcq import MCQTask
from medgspo.eval.open_ended import OpenTask, judge_rows, question_and_reference, run_eval
from medgspo.eval.runner import GenerationSettings, evaluate
from medgspo.judge import JudgeConfig, make_judge
from medgspo.utils.cli import merge_repeated

GEN = GenerationSettings(batch_size=4, max_new_tokens=8, show_progress=False)
ROW_KEYS = {"question", "reference", "completion", "thinking", "answer", "well_formed", "score", "error", "cached"}
SUMMARY_KEYS = {"n", "format_compliance", "mean_score", "score_ci_low", "score_ci_high", "tier_counts"}
SUMMARY_KEYS |= {"mean_think_chars", "mean_answer_chars", "judge_failures", "model", "adapter", "judge"}


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


def _judge_and_close(judge, rows):
    """What OpenTask does per model, on a fresh event loop, then release the judge (its cache file)."""

    async def run():
        try:
            await judge_rows(judge, rows)
        finally:
            await judge.aclose()

    asyncio.run(run())


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- judging rows (no model) ----------------------------------------------------------------------------------
def test_judge_rows_rules_and_reference_verdicts():
    question, reference = "转移性右下腹痛伴麦氏点压痛，最可能的诊断？", "急性阑尾炎。"

    def row(completion, answer, well_formed):
        return {
            "question": question,
            "reference": reference,
            "completion": completion,
            "answer": answer,
            "well_formed": well_formed,
        }

    rows = [
        row("想一想\n</think>\n\n急性阑尾炎", "急性阑尾炎", True),  # identical to the reference: +2.0
        row(
            "想一想\n</think>\n\n今天天气很好，我们一起去公园散步吧。", "今天天气很好，我们一起去公园散步吧。", True
        ),  # 0.0
        row("想一想\n</think>\n\n可能是右半结肠的炎症性病变", "可能是右半结肠的炎症性病变", True),  # undecided: None
        row("只有思考，没有结束标签", "", False),  # -1.0 by rule
        row("想\n</think>\n\n</think>\n\n急性阑尾炎", "急性阑尾炎", False),  # several </think>: -1.0 by rule
    ]
    _judge_and_close(make_judge(JudgeConfig(judge_backend="reference")), rows)
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
        judged = [
            {
                "question": question,
                "reference": reference,
                "completion": f"想\n</think>\n\n{a}",
                "answer": a,
                "well_formed": True,
            }
            for a in answers
        ]
        return judged + [
            {"question": question, "reference": reference, "completion": "想", "answer": "", "well_formed": False}
        ]

    config = JudgeConfig(
        judge_backend="openai",
        judge_model="fake-judge",
        judge_cache=str(tmp_path / "cache.sqlite"),
        judge_max_retries=0,
    )
    with FakeOpenAIServer() as server:
        config.judge_base_url = server.base_url
        first = rows()
        _judge_and_close(make_judge(config, api_key="test-key"), first)
        assert [r["score"] for r in first] == [2.0, -0.5, 0.5, -1.0]
        assert len(server.requests) == 3 and not any(r["cached"] for r in first)  # malformed: no request
        again = rows()
        _judge_and_close(make_judge(config, api_key="test-key"), again)  # a new judge, same cache
        assert [r["score"] for r in again] == [2.0, -0.5, 0.5, -1.0]
        assert len(server.requests) == 3 and all(r["cached"] for r in again[:3])


def test_question_and_reference_accepts_both_schemas():
    assert question_and_reference({"Question": " 问？ ", "Response": "答。"}, 0) == ("问？", "答。")
    assert question_and_reference({"question": "问？", "reference": "答。"}, 1) == ("问？", "答。")
    with pytest.raises(ValueError, match="record 2"):
        question_and_reference({"Question": "问？"}, 2)
    with pytest.raises(ValueError, match="record 1"):
        OpenTask([{"Question": "问？", "Response": "答。"}, {"question": "没有参考答案"}])  # checked before any model


# ---- end to end on the tiny model -----------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_open_tiny_model(tiny_model_dir, bundled_records, tmp_path):
    records = bundled_records[:4]
    summaries = evaluate(
        OpenTask(records, JudgeConfig(judge_backend="reference")), [("tiny", str(tiny_model_dir), None)], tmp_path, GEN
    )
    summary, rows = summaries["tiny"], _lines(tmp_path / "generations.jsonl")
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["n"] == 4 and len(rows) == 4
    assert summary["judged"] + summary["judge_failures"] == 4
    assert sum(summary["tier_counts"].values()) == summary["judged"]
    assert summary["judge"]["backend"] == "reference" and summary["max_new_tokens"] == 8
    assert 0 <= summary["hit_token_limit"] <= 4
    for row, record in zip(rows, records, strict=True):
        assert ROW_KEYS <= row.keys()
        assert row["question"] == record["Question"].strip() and row["reference"] == record["Response"].strip()
        assert 0 < row["n_tokens"] <= 8
        if not row["well_formed"]:
            assert row["score"] == -1.0


@pytest.mark.slow
def test_run_eval_writes_every_file(tiny_model_dir, lora_adapter, bundled_records, tmp_path):
    models = [("base", str(tiny_model_dir), None), ("sft", str(tiny_model_dir), str(lora_adapter))]
    summaries = run_eval(
        models, bundled_records[:3], None, tmp_path, seed=1, batch_size=4, max_new_tokens=8, show_progress=False
    )
    assert list(summaries) == ["base", "sft"]
    assert summaries["sft"]["adapter"] == str(lora_adapter)
    lines = _lines(tmp_path / "generations.jsonl")
    assert [line["model"] for line in lines] == ["base"] * 3 + ["sft"] * 3
    assert all(ROW_KEYS <= line.keys() for line in lines)
    saved = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert saved.keys() == {"base", "sft"} and SUMMARY_KEYS <= saved["base"].keys()
    table = (tmp_path / "eval.md").read_text(encoding="utf-8")
    assert "| model | n | format compliance | mean score [95% CI]" in table
    assert "\n| base | 3 |" in table and "\n| sft | 3 |" in table
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unique"):
        run_eval([("a", "tiny", None), ("a", "tiny", None)], bundled_records[:1], None, tmp_path)


@pytest.mark.slow
def test_evaluate_mcq(tiny_model_dir, tmp_path):
    benchmarks = load_benchmarks(None, limit=4)
    items = benchmarks[0].items
    summaries = evaluate(MCQTask(benchmarks), [("tiny", str(tiny_model_dir), None)], tmp_path, GEN)
    summary, rows = summaries["tiny"]["benchmarks"]["medgspo"], _lines(tmp_path / "mcq_generations.jsonl")
    assert summary["n"] == 4 and summary["samples"] == 1 and 0 <= summary["accuracy"] <= 1
    assert {"ci_low", "ci_high", "unreadable", "answers", "format_compliance", "per_subject"} <= summary.keys()
    assert sum(s["n"] for s in summary["per_subject"].values()) == 4
    for row, item in zip(rows, items, strict=True):
        assert row["model"] == "tiny" and row["benchmark"] == "medgspo" and row["sample"] == 0
        assert row["gold"] == item.answer and row["correct"] == (row["prediction"] == item.answer)
        assert row["prediction"] is None or row["prediction"] in item.letters
    saved = json.loads((tmp_path / "mcq.json").read_text(encoding="utf-8"))["tiny"]
    assert saved["benchmarks"]["medgspo"]["n"] == 4 and saved["num_samples"] == 1
    assert "| medgspo | tiny | 4 |" in (tmp_path / "mcq.md").read_text(encoding="utf-8")
    table = json.loads((tmp_path / "mcq_table.json").read_text(encoding="utf-8"))
    assert [(r["benchmark"], r["model"], r["n"]) for r in table["results"]] == [("medgspo", "tiny", 4)]


# ---- the command ----------------------------------------------------------------------------------------------
def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--model",
        "--adapter",
        "--name",
        "--task",
        "--data",
        "--mcq_layout",
        "--subjects",
        "--mcq_prompt",
        "--num_samples",
        "--limit",
        "--output_dir",
        "--judge_backend",
        "--judge_base_url",
        "--judge_model",
        "--judge_concurrency",
        "--judge_cache",
        "--judge_api_key_env",
        "--judge_undecided_score",
        "--batch_size",
        "--max_new_tokens",
        "--sample",
        "--seed",
        "--no_progress",
        "--config",
    ):
        assert flag in out


def test_repeated_and_multi_value_list_flags_merge():
    argv = ["--adapter", "none", "--limit", "2", "--adapter=runs/sft", "--model-x", "m", "--adapter", "-"]
    assert merge_repeated(argv, ["adapter"]) == [
        "--adapter",
        "none",
        "runs/sft",
        "-",
        "--limit",
        "2",
        "--model-x",
        "m",
    ]
    assert merge_repeated(["--model", "a", "b", "--", "--model", "c"], ["model"]) == [
        "--model",
        "a",
        "b",
        "--",
        "--model",
        "c",
    ]
    from medgspo.eval.cli import COMMANDS, LIST_FLAGS
    from medgspo.utils.cli import parse

    parser = COMMANDS[0].parser()
    for argv in (
        ["--adapter", "none", "--adapter", "runs/sft"],
        ["--adapter", "none", "runs/sft"],
        ["--adapter", "none", "--name", "base", "sft", "--adapter", "runs/sft"],
    ):
        args, _ = parse(parser, merge_repeated(argv, LIST_FLAGS))
        assert args.adapter == ["none", "runs/sft"]


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
        (("--batch-size", "0"), "--batch_size must be >= 1"),
        (("--max_new_tokens", "0"), "--max_new_tokens must be >= 1"),
        (("--adapter", "/no/such/adapter"), "adapter folder not found: /no/such/adapter"),
        (("--model", "./no/such/model"), "model folder not found: ./no/such/model"),
        (("--model", "a", "b", "--adapter", "x", "y", "z"), "--adapter is given 3 times but --model 2 times"),
        (("--model", "a", "--model", "b", "--adapter", "x", "--adapter", "y", "--adapter", "z"), "--adapter is given"),
        (("--judge-backend", "local"), "--judge_backend local needs --judge_model"),
        (("--judge_undecided_score", "0.5", "--judge_backend", "openai"), "--judge_undecided_score only applies"),
        (("--task", "mcq", "--data", "/no/such/items.jsonl"), "/no/such/items.jsonl: <path>: no such file"),
        (("--task", "mcq", "--num_samples", "2"), "--num_samples > 1 needs --sample"),
        (("--task", "mcq", "--num_samples", "0"), "--num_samples must be >= 1"),
        (("--task", "mcq", "--subjects", "anatomy"), "--subjects picks CMMLU subject files, but no --data is CMMLU"),
        (("--subjects", "anatomy"), "--subjects applies to --task mcq only"),
        (("--data", "a.jsonl", "--data", "b.jsonl"), "--task open reads one --data (got 2)"),
        (("--config", "/no/such/eval.yaml"), "--config /no/such/eval.yaml: no such file"),
    ],
)
def test_user_mistakes_end_in_error_lines(argv, message, capsys, tmp_path):
    assert main(["eval", *argv, "--output_dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_missing_judge_key_stops_before_generation(write_jsonl, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MEDGSPO_TEST_NO_KEY", raising=False)
    data = write_jsonl([{"Question": "问？", "Complex_CoT": "想。", "Response": "答。"}])
    code = main(
        [
            "eval",
            "--data",
            str(data),
            "--judge_backend",
            "openai",
            "--judge_api_key_env",
            "MEDGSPO_TEST_NO_KEY",
            "--model",
            "tiny-not-loaded",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert code == 3  # the model would fail to load: the judge failed first
    assert "MEDGSPO_TEST_NO_KEY" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_mcq_end_to_end(tiny_model_dir, capsys, tmp_path):
    code = main(
        [
            "eval",
            "--task",
            "mcq",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "2",
            "--max-new-tokens",
            "4",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| benchmark | model | n | accuracy [95% CI] | unreadable |" in out
    assert str(tmp_path / "mcq.md") in out and (tmp_path / "mcq_generations.jsonl").is_file()


@pytest.mark.slow
def test_cli_open_end_to_end(tiny_model_dir, write_jsonl, capsys, tmp_path):
    data = write_jsonl([{"Question": f"问题{i}？", "Complex_CoT": "想。", "Response": "答。"} for i in range(3)])
    code = main(
        [
            "eval",
            "--data",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--name",
            "tiny",
            "--limit",
            "2",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(tmp_path / "out"),
            "--no_progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| tiny | 2 |" in out and str(tmp_path / "out" / "eval.png") in out
    assert len((tmp_path / "out" / "generations.jsonl").read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("spelling", ["--max-new-tokens", "--max_new_tokens", "config"])
def test_cli_flag_spellings_and_config(spelling, tiny_model_dir, write_jsonl, capsys, tmp_path):
    """``--max-new-tokens 8``, ``--max_new_tokens 8`` and ``max_new_tokens: 8`` in ``--config`` mean the same."""
    data = write_jsonl([{"Question": f"问题{i}？", "Complex_CoT": "想。", "Response": "答。"} for i in range(3)])
    out_dir = tmp_path / "out"
    common = ["--data", str(data), "--model", str(tiny_model_dir), "--limit", "2", "--output_dir", str(out_dir)]
    if spelling == "config":
        recipe = tmp_path / "eval.yaml"
        recipe.write_text(
            f"max_new_tokens: 8\nprogress: false\nadapter: [none]\noutput_dir: {out_dir}\n", encoding="utf-8"
        )
        argv = ["--config", str(recipe), "--data", str(data), "--model", str(tiny_model_dir), "--limit", "2"]
    else:
        argv = [*common, spelling, "8", "--no-progress"]
    assert main(["eval", *argv]) == 0
    summary = json.loads((out_dir / "eval.json").read_text(encoding="utf-8"))
    (only,) = summary.values()
    assert only["max_new_tokens"] == 8 and only["n"] == 2
    assert all(row["n_tokens"] <= 8 for row in _lines(out_dir / "generations.jsonl"))
