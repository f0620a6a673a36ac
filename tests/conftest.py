"""Shared fixtures: a tiny Qwen3.5 model built once per test session, and small data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medgspo.data.records import load_records


@pytest.fixture(scope="session")
def bundled_records() -> list[dict]:
    return load_records().records


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_records) -> Path:
    """The embedded tiny model, built into a temporary folder once per session."""
    from medgspo.modeling.tiny_model import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", bundled_records)


@pytest.fixture
def write_jsonl(tmp_path):
    """Write a list of dicts (or raw strings) as lines of a .jsonl file and return its path."""

    def _write(rows, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return _write


GOOD = {
    "Question": "患者发热咳嗽3天，最可能的诊断是什么？",
    "Complex_CoT": "我先考虑社区获得性肺炎……",
    "Response": "社区获得性肺炎。",
}


@pytest.fixture(scope="session")
def hub_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A miniature of the Qwen/Qwen3.5-4B hub checkpoint: vision-language class and weight layout, random weights."""
    from hub_miniature import build_hub_miniature

    return build_hub_miniature(tmp_path_factory.mktemp("hub") / "Qwen3.5-mini", tiny_model_dir)
