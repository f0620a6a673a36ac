"""``medgspo judge`` through the one entry point (:func:`medgspo.cli.main`), against the reference backend and a
local OpenAI-compatible server: outputs, the summary, the cache, exit codes and both flag spellings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Fault

from medgspo.cli import main

KEY = "sk-cli-test-key-0123456789"
QUESTION = "患者男，25岁，转移性右下腹痛。最可能的诊断？"
REFERENCE = "最可能的诊断是急性阑尾炎。"
ROWS = [
    {
        "id": 1,
        "question": QUESTION,
        "reference": REFERENCE,
        "completion": "想想\n</think>\n\n最可能的诊断是急性阑尾炎。",
    },
    {"id": 2, "question": QUESTION, "reference": REFERENCE, "answer": "最可能的诊断不是急性阑尾炎。"},
    {"id": 3, "question": QUESTION, "reference": REFERENCE, "completion": "一直在想，没有写完"},
    {"id": 4, "question": QUESTION, "reference": REFERENCE, "answer": "今天天气很好，我们去公园散步吧。"},
]


def cli(*argv: str) -> int:
    return main(["judge", *argv])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", ROWS)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch) -> None:
    monkeypatch.setattr("medgspo.judge.api.client.OpenAIJudge._backoff", lambda self, attempt, retry_after: 0.0)


def test_reference_backend_end_to_end(inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "judged.jsonl"
    assert cli("--input", str(inputs), "--output", str(out), "--judge_backend", "reference", "--no_progress") == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    assert [r["score"] for r in rows] == [2.0, None, -1.0, 0.0]
    assert rows[1]["error"].startswith("undecided") and rows[0]["error"] is None
    assert all(r["cached"] is False for r in rows) and rows[0]["question"] == QUESTION
    printed = capsys.readouterr().out
    assert "judgments: 4" in printed and "A(+2.0)=1" in printed and "abstained: 1" in printed
    assert f"output: {out}" in printed


def test_openai_backend_with_cache_and_rerun(inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    with FakeOpenAIServer() as server:
        server.inject(Fault.http(503), answer="最可能的诊断不是急性阑尾炎。")
        args = [
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--judge_backend",
            "openai",
            "--judge_base_url",
            server.base_url,
            "--judge_model",
            "fake",
            "--judge_api_key_env",
            "JUDGE_TEST_KEY",
            "--judge_cache",
            str(cache),
            "--judge_concurrency",
            "4",
            "--no_progress",
        ]
        assert cli(*args) == 0
        first = capsys.readouterr().out
        rows = read_jsonl(out)
        assert [r["score"] for r in rows] == [2.0, -0.5, -1.0, 0.5]
        assert [r["label"] for r in rows] == ["A", "D", "E", "B"]
        assert "calls: 4" in first and "retries: 1" in first and "estimated cost $" in first
        probes = len(server.probes)
        assert probes == 1  # the preflight request of the first run
        assert cli(*args) == 0
        second = capsys.readouterr().out
        assert len(server.requests) == 4  # the rerun paid nothing
        assert len(server.probes) == probes and server.model_listings == 0  # and made no request at all
    rows = read_jsonl(out)
    assert [r["cached"] for r in rows] == [True, True, False, True]
    assert "calls: 0 | cache hits: 3" in second
    assert KEY not in first + second + out.read_text(encoding="utf-8")


def test_failed_judgments_are_null_not_zero(inputs: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer() as server:
        server.inject(*[Fault.http(500)] * 2, answer="今天天气很好，我们去公园散步吧。")
        code = cli(
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--judge_backend",
            "openai",
            "--judge_base_url",
            server.base_url,
            "--judge_max_retries",
            "1",
            "--no_progress",
        )
    assert code == 0
    last = read_jsonl(out)[-1]
    assert last["score"] is None and last["error"].startswith("HTTP 500")


def test_fatal_error_is_one_line_without_key(inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    with FakeOpenAIServer() as server:
        server.inject(Fault.http(402))
        code = cli(
            "--input",
            str(inputs),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--judge_backend",
            "openai",
            "--judge_base_url",
            server.base_url,
            "--no_progress",
        )
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err.startswith("error: judge API") and "out of balance" in captured.err
    assert "Traceback" not in captured.err and KEY not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_key(inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    out = str(tmp_path / "o.jsonl")
    code = cli(
        "--input",
        str(inputs),
        "--output",
        out,
        "--judge_backend",
        "openai",
        "--judge_api_key_env",
        "NO_SUCH_JUDGE_KEY",
    )
    assert code == 3 and "NO_SUCH_JUDGE_KEY" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "in.jsonl:2: "),
        ('{"question": "q", "reference": "r"}', "in.jsonl:2: give either 'completion'"),
        ('{"question": "", "reference": "r", "answer": "a"}', "in.jsonl:2: field 'question'"),
    ],
)
def test_bad_input_line(tmp_path: Path, capsys, line: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(ROWS[0], ensure_ascii=False) + "\n" + line + "\n", encoding="utf-8")
    assert cli("--input", str(path), "--output", str(tmp_path / "o.jsonl"), "--judge_backend", "reference") == 2
    assert message in capsys.readouterr().err


def test_user_errors(tmp_path: Path, inputs: Path, capsys) -> None:
    out = str(tmp_path / "o.jsonl")
    assert cli("--input", str(tmp_path / "missing.jsonl"), "--output", out) == 2
    assert "input file not found" in capsys.readouterr().err
    assert cli("--input", str(tmp_path), "--output", out) == 2  # a folder is not an input file
    assert "input file not found" in capsys.readouterr().err
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    assert cli("--input", str(empty), "--output", out) == 2
    assert "input file is empty" in capsys.readouterr().err
    assert cli("--input", str(inputs), "--output", out, "--judge_backend", "local") == 2
    assert "--judge_model" in capsys.readouterr().err
    assert cli("--input", str(inputs), "--output", out, "--judge_concurrency", "0") == 2
    assert "--judge_concurrency" in capsys.readouterr().err
    assert cli("--input", str(inputs), "--output", str(inputs / "o.jsonl")) == 2  # its folder is a file
    assert "cannot write --output" in capsys.readouterr().err


def test_input_and_output_are_required(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli("--judge_backend", "reference")
    assert info.value.code == 2
    assert "--input" in capsys.readouterr().err


def test_default_backend_is_reference(inputs: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)  # the default needs no key and no network
    out = tmp_path / "o.jsonl"
    assert cli("--input", str(inputs), "--output", str(out)) == 0
    assert [r["score"] for r in read_jsonl(out)] == [2.0, None, -1.0, 0.0]


@pytest.mark.parametrize(
    "spelling",
    [
        ["--judge-backend", "reference", "--no-progress"],
        ["--judge_backend", "reference", "--no_progress"],
        ["--judge_backend=reference", "--progress", "false"],
    ],
    ids=["dashes", "underscores", "equals"],
)
def test_both_flag_spellings_work_end_to_end(inputs: Path, tmp_path: Path, capsys, spelling: list[str]) -> None:
    out = tmp_path / "judged.jsonl"
    assert main(["judge", "--input", str(inputs), "--output", str(out), *spelling]) == 0
    assert [r["label"] for r in read_jsonl(out)] == ["A", None, "E", "C"]
    assert f"output: {out}" in capsys.readouterr().out


def test_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["judge", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--input",
        "--output",
        "--no_progress",
        "--judge_backend",
        "--judge_base_url",
        "--judge_model",
        "--judge_concurrency",
        "--judge_cache",
        "--judge_api_key_env",
        "--judge_deadline_s",
        "--judge_max_retries",
        "--judge_max_answer_chars",
        "--no_judge_json_mode",
        "--judge_price_input_per_mtok",
        "--config",
    ):
        assert option in text
