"""``medgspo judge`` through its ``add_arguments``/``run`` pair, against the reference backend and a local server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Fault

from medgspo.judge.cli import add_arguments, run

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
    parser = argparse.ArgumentParser(prog="medgspo judge")
    add_arguments(parser)
    return run(parser.parse_args(list(argv)))


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
    monkeypatch.setattr("medgspo.judge.client.OpenAIJudge._backoff", lambda self, attempt, retry_after: 0.0)


def test_reference_backend_end_to_end(inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "judged.jsonl"
    assert cli("--input", str(inputs), "--output", str(out), "--backend", "reference", "--no-progress") == 0
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
            "--base-url",
            server.base_url,
            "--model",
            "fake",
            "--api-key-env",
            "JUDGE_TEST_KEY",
            "--cache",
            str(cache),
            "--concurrency",
            "4",
            "--no-progress",
        ]
        assert cli(*args) == 0
        first = capsys.readouterr().out
        rows = read_jsonl(out)
        assert [r["score"] for r in rows] == [2.0, -0.5, -1.0, 0.5]
        assert [r["label"] for r in rows] == ["A", "D", "E", "B"]
        assert "calls: 4" in first and "retries: 1" in first and "estimated cost $" in first
        assert cli(*args) == 0
        second = capsys.readouterr().out
        assert len(server.requests) == 4  # the rerun paid nothing
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
            "--base-url",
            server.base_url,
            "--max-retries",
            "1",
            "--no-progress",
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
            "--base-url",
            server.base_url,
            "--no-progress",
        )
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err.startswith("medgspo judge: error:") and "out of balance" in captured.err
    assert "Traceback" not in captured.err and KEY not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_key(inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    code = cli("--input", str(inputs), "--output", str(tmp_path / "o.jsonl"), "--api-key-env", "NO_SUCH_JUDGE_KEY")
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
    assert cli("--input", str(path), "--output", str(tmp_path / "o.jsonl"), "--backend", "reference") == 2
    assert message in capsys.readouterr().err


def test_user_errors(tmp_path: Path, inputs: Path, capsys) -> None:
    assert cli("--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")) == 2
    assert "input file not found" in capsys.readouterr().err
    assert cli("--input", str(inputs), "--output", str(tmp_path / "o.jsonl"), "--backend", "local") == 2
    assert "--model" in capsys.readouterr().err
    assert cli("--input", str(inputs), "--output", str(tmp_path / "o.jsonl"), "--concurrency", "0") == 2
    assert "--concurrency" in capsys.readouterr().err


def test_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli("--help")
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--input",
        "--output",
        "--backend",
        "--base-url",
        "--model",
        "--concurrency",
        "--cache",
        "--api-key-env",
    ):
        assert option in text
