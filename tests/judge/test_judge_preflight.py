"""The judge meets today's DeepSeek: a DeepSeek-like local server (only today's names, thinking unless switched
off) and the pre-flight check that stops ``judge``, ``gspo``, ``eval`` and ``pipeline`` before any model loads."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from fake_openai_server import DeepSeekLikeServer, FakeOpenAIServer, Fault, verdict_json

from medgspo.cli import main
from medgspo.judge import JudgeConfig, JudgeFatalError
from medgspo.judge.api.preflight import check_judge
from medgspo.judge.pricing import LIST_PRICES, list_prices

KEY = "sk-preflight-test-0123456789"
QUESTION = "患者男，25岁，转移性右下腹痛。最可能的诊断？"
REFERENCE = "最可能的诊断是急性阑尾炎。"
ROWS = [
    {"question": QUESTION, "reference": REFERENCE, "answer": "最可能的诊断是急性阑尾炎。"},
    {"question": QUESTION, "reference": REFERENCE, "answer": "最可能的诊断不是急性阑尾炎。"},
    {"question": QUESTION, "reference": REFERENCE, "answer": "考虑阑尾炎，建议外科会诊。"},
]


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch) -> None:
    """Every test starts with a key in the environment and no backoff."""
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    monkeypatch.setattr("medgspo.judge.api.client.OpenAIJudge._backoff", lambda self, attempt, retry_after: 0.0)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


def judge_cli(inputs: Path, out: Path, base_url: str, *flags: str) -> int:
    args = ["judge", "--input", str(inputs), "--output", str(out), "--judge_backend", "openai"]
    return main([*args, "--judge_base_url", base_url, "--judge_deadline_s", "1", "--no_progress", *flags])


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- DeepSeek as it is now ------------------------------------------------------------------------------------
def test_default_model_is_served_today_and_priced() -> None:
    config = JudgeConfig(judge_backend="openai")
    assert config.model == "deepseek-flash" and config.model in LIST_PRICES
    assert config.prices == list_prices("deepseek-flash", "peak")  # read 2026-11-29
    assert "2026-11-29" in config.price_note and "peak" in config.price_note
    assert (
        JudgeConfig(judge_backend="openai", judge_price_period="off-peak").prices.output_per_mtok
        == config.prices.output_per_mtok / 2
    )
    assert JudgeConfig(judge_backend="local", judge_model="qwen").prices.output_per_mtok == 0.0


def test_default_model_works_with_thinking_off(inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.jsonl"
    with DeepSeekLikeServer(think_s=3.0) as server:  # thinking would outlast the 1 s deadline of every call
        assert judge_cli(inputs, out, server.base_url) == 0
        bodies = server.requests + server.probes
    assert server.thought == 0 and all(b["thinking"] == {"type": "disabled"} for b in bodies)
    assert all(b["model"] == "deepseek-flash" for b in bodies)
    assert len(server.probes) == 1 and len(server.requests) == 3  # one pre-flight request, then the judgments
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["score"] for r in rows] == [2.0, -0.5, 0.5]
    assert "DeepSeek list price of deepseek-flash" in capsys.readouterr().out


def test_the_fake_deepseek_thinks_unless_told_not_to() -> None:
    with DeepSeekLikeServer(think_s=0.0) as server:
        config = JudgeConfig(judge_backend="openai", judge_base_url=server.base_url, judge_thinking=True)
        judgment = check_judge(config, api_key=KEY)
    assert judgment and server.thought == 1  # without the switch the server thinks (and bills it)


def test_legacy_flash_alias_is_accepted() -> None:
    with DeepSeekLikeServer() as server:
        assert check_judge(
            JudgeConfig(judge_backend="openai", judge_base_url=server.base_url, judge_model="deepseek-v4-flash"),
            api_key=KEY,
        )


@pytest.mark.parametrize("retired", ["deepseek-chat", "deepseek-reasoner"])
def test_retired_name_stops_fast_naming_the_current_one(inputs: Path, tmp_path: Path, capsys, retired) -> None:
    out = tmp_path / "out.jsonl"
    with DeepSeekLikeServer() as server:
        code = judge_cli(inputs, out, server.base_url, "--judge_model", retired)
    err = capsys.readouterr().err
    assert code == 3 and not out.exists()
    assert server.total_requests <= 2 and not server.requests  # no judgment was attempted
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert retired in err and "--judge_model deepseek-flash" in err and "2026-07-24" in err
    assert KEY not in err


def test_retired_name_at_deepseek_itself_needs_no_request(monkeypatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY")  # not even a key is needed to tell
    with pytest.raises(JudgeFatalError, match="--judge_model deepseek-flash"):
        check_judge(JudgeConfig(judge_backend="openai", judge_model="deepseek-chat"))


def test_retired_name_named_during_a_run_without_the_check(inputs: Path, tmp_path: Path, capsys) -> None:
    with DeepSeekLikeServer() as server:
        code = judge_cli(
            inputs, tmp_path / "o.jsonl", server.base_url, "--judge_model", "deepseek-chat", "--no_judge_preflight"
        )
    assert code == 3 and "--judge_model deepseek-flash" in capsys.readouterr().err


def test_unknown_model_lists_what_is_served() -> None:
    with DeepSeekLikeServer() as server, pytest.raises(JudgeFatalError) as info:
        check_judge(
            JudgeConfig(judge_backend="openai", judge_base_url=server.base_url, judge_model="deepseek-v5"), api_key=KEY
        )
    assert "deepseek-flash, deepseek-v4-pro" in str(info.value) and "--judge_model" in str(info.value)
    assert server.total_requests == 2


# ---- failures that no retry fixes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "words"),
    [
        (400, "--no_judge_json_mode"),  # the model is served, so the request's parameters were rejected
        (401, "DEEPSEEK_API_KEY"),
        (402, "out of balance"),
        (403, "permission"),
        (404, "--judge_model"),
        (422, "--judge_model"),
    ],
)
def test_fatal_statuses_stop_with_one_line_and_at_most_two_requests(
    inputs: Path, tmp_path: Path, capsys, status: int, words: str
) -> None:
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(model="deepseek-flash") as server:
        server.inject(*[Fault.http(status)] * 5)
        code = judge_cli(inputs, out, server.base_url)
    err = capsys.readouterr().err
    assert code == 3 and not out.exists() and not server.requests
    assert server.total_requests <= 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and words in err
    assert KEY not in err and "Traceback" not in err


def test_unreachable_server_stops(inputs: Path, tmp_path: Path, capsys) -> None:
    assert judge_cli(inputs, tmp_path / "out.jsonl", closed_port_url()) == 3
    err = capsys.readouterr().err
    assert "cannot reach the judge" in err and "--judge_base_url" in err


def test_a_server_that_only_sends_keep_alive_lines_stops_at_the_deadline() -> None:
    with FakeOpenAIServer() as server, pytest.raises(JudgeFatalError, match="no complete reply within 0.5 s"):
        server.inject(Fault.stall(5.0))  # HTTP 200 at once, then blank lines: no read timeout ever fires
        check_judge(
            JudgeConfig(
                judge_backend="openai",
                judge_base_url=server.base_url,
                judge_model="deepseek-flash",
                judge_deadline_s=0.5,
            ),
            api_key=KEY,
        )


def test_missing_key_stops_before_any_request(inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY")
    with DeepSeekLikeServer() as server:
        assert judge_cli(inputs, tmp_path / "out.jsonl", server.base_url) == 3
    assert server.total_requests == 0 and "DEEPSEEK_API_KEY" in capsys.readouterr().err


def test_overload_only_warns_and_the_run_goes_on(inputs: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out.jsonl"
    with DeepSeekLikeServer() as server, caplog.at_level(logging.WARNING):
        server.inject(Fault.http(503))  # the pre-flight request meets it; the judgments do not
        assert judge_cli(inputs, out, server.base_url) == 0
    assert "HTTP 503; going on" in caplog.text
    assert [json.loads(line)["score"] for line in out.read_text(encoding="utf-8").splitlines()] == [2.0, -0.5, 0.5]


def test_a_judge_that_thinks_anyway_is_reported(caplog) -> None:
    with FakeOpenAIServer() as server, caplog.at_level(logging.WARNING):
        server.inject(Fault.reply(verdict_json("A"), reasoning_content="让我想想……" * 50))
        check_judge(
            JudgeConfig(judge_backend="openai", judge_base_url=server.base_url, judge_model="deepseek-flash"),
            api_key=KEY,
        )
    assert "returned its thinking" in caplog.text


def test_each_check_asks_the_server_nothing_is_remembered() -> None:
    """No module-level memory: a command checks once, at its start (the pipeline hands its checked config to GSPO,
    which does not check again: tests/test_pipeline.py)."""
    with DeepSeekLikeServer() as server:
        config = JudgeConfig(judge_backend="openai", judge_base_url=server.base_url)
        check_judge(config, api_key=KEY)
        assert check_judge(config, api_key=KEY).startswith("judge deepseek-flash at ")
    assert len(server.probes) == 2


def test_preflight_can_be_skipped(inputs: Path, tmp_path: Path) -> None:
    with DeepSeekLikeServer() as server:
        assert judge_cli(inputs, tmp_path / "out.jsonl", server.base_url, "--no_judge_preflight") == 0
    assert not server.probes and len(server.requests) == 3


def test_reference_backend_makes_no_request() -> None:
    assert check_judge(JudgeConfig(judge_backend="reference")) is None


# ---- every command with a judge checks it before loading a model -----------------------------------------------
def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the judge was checked")


def test_gspo_checks_the_judge_before_loading_the_policy(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("medgspo.train.gspo.load_policy", _no_model)
    monkeypatch.setattr("medgspo.train.gspo.load_split", _no_model)
    argv = ["gspo", "--config", "recipes/tiny/gspo.yaml", "--output_dir", str(tmp_path / "gspo")]
    code = main([*argv, "--judge_backend", "openai", "--judge_base_url", closed_port_url()])
    assert code == 3 and "cannot reach the judge" in capsys.readouterr().err


def test_eval_checks_the_judge_before_loading_a_model(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("medgspo.eval.cli.evaluate", _no_model)
    with DeepSeekLikeServer() as server:
        argv = ["eval", "--task", "open", "--output_dir", str(tmp_path / "eval"), "--judge_backend", "openai"]
        code = main([*argv, "--judge_base_url", server.base_url, "--judge_model", "deepseek-chat"])
    assert code == 3 and "--judge_model deepseek-flash" in capsys.readouterr().err


def test_pipeline_checks_the_judge_before_sft(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("medgspo.train.sft.run_sft", _no_model)
    with FakeOpenAIServer() as server:
        server.inject(Fault.http(402))
        argv = ["pipeline", "--run_dir", str(tmp_path / "run"), "--judge_backend", "openai"]
        code = main([*argv, "--judge_base_url", server.base_url])
    assert code == 3 and "out of balance" in capsys.readouterr().err
