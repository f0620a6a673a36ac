"""``--push_to_hub``: the exported folder reaches a local server speaking the Hub's commit endpoints; without a
token the command stops before any work with one line."""

from __future__ import annotations

import pytest
from fake_hub import FakeHub, start

from medgspo.cli import main


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = FakeHub()
    url, stop = start(server)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file of the machine
    yield server
    stop()


@pytest.fixture
def adapter(tiny_model_dir, tmp_path):
    from hub_miniature import make_adapter
    from transformers import AutoModelForCausalLM

    make_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter", ["q_proj"])
    return tmp_path / "adapter"


def test_push_uploads_the_exported_folder(hub, adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    out = tmp_path / "med"
    assert main(["export", "--adapter", str(adapter), "--output", str(out), "--push_to_hub", "me/med-gspo"]) == 0
    assert hub.repos and hub.repos[0]["name"] == "med-gspo"
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "README.md" in hub.files and "model.safetensors" in hub.files
    assert hub.files == local  # every file, byte for byte
    assert all("Bearer hf_test_token" in r for r in hub.requests)
    assert f"Uploaded to the Hub: {hub.url}/me/med-gspo/commit/" in capsys.readouterr().out
    assert "me/med-gspo" in local["README.md"].decode()  # the card's snippets name the repository
    assert [v["content"] for v in hub.validated] == [local["README.md"].decode()]  # the Hub checked its metadata


def test_rejected_card_metadata_is_one_line(hub, adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub.reject_yaml = '"license" must be one of [apache-2.0, mit, ...]'
    argv = ["export", "--adapter", str(adapter), "--output", str(tmp_path / "med"), "--push_to_hub", "me/m"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]  # after the merge's progress bars
    assert len(errors) == 1 and "--push_to_hub me/m: Invalid metadata in README.md." in errors[0], err
    assert "license" in errors[0] and hub.files == {}


def test_push_without_a_token_stops_before_any_work(hub, adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "med"
    assert main(["export", "--adapter", str(adapter), "--output", str(out), "--push_to_hub", "me/med-gspo"]) == 2
    err = capsys.readouterr().err
    assert "--push_to_hub needs a Hugging Face token" in err and err.count("\n") == 1
    assert not out.exists() and hub.requests == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--push_to_hub", "no-owner"], "expected a Hub repository id"),
        (["--gguf", "q4_0"], "--gguf q4_0: choose from f32, f16, bf16, q8_0"),
        (["--gguf", "f16", "--merge", "false"], "--gguf needs the merged model"),
        (["--gguf", "f16", "--llama_cpp", "/nowhere"], "no convert_hf_to_gguf.py there"),
        (["--calibration", "/nowhere.json"], "--calibration /nowhere.json: no such file"),
    ],
)
def test_publishing_mistakes_are_one_line_errors(adapter, tmp_path, capsys, argv, message):
    out = tmp_path / "med"
    assert main(["export", "--adapter", str(adapter), "--output", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()
