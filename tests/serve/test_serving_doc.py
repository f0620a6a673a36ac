"""The ``openai`` client code in docs/serving.md runs unchanged against ``medgspo serve``.

The block is cut out of the document and run in a fresh Python; only ``MEDGSPO_BASE_URL`` (which the block reads)
points it at a test server that serves the adapter as ``medical``, the name the document uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_chat import ANSWER, THINKING, memorized_adapter

from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def client_block() -> str:
    """The first python block after the heading ``### The openai client``."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### The openai client") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_block_is_the_one_we_think():
    code = client_block()
    assert "OpenAI(" in code and 'os.environ.get("MEDGSPO_BASE_URL"' in code and "stream=True" in code


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    adapter = memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")
    engine = ChatEngine.load(str(tiny_model_dir), adapter)
    with BackgroundServer(create_app(engine, ServerConfig("medical", max_tokens_limit=512))) as running:
        yield running


def test_the_documented_client_code_works_against_medgspo_serve(server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDGSPO_")}
    env["MEDGSPO_BASE_URL"] = server.url + "/v1"
    run = subprocess.run(
        [sys.executable, "-c", client_block()], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"thinking: {THINKING}"
    assert lines[1] == f"answer:   {ANSWER}"
    assert lines[2] == THINKING + ANSWER  # the stream: reasoning pieces, then answer pieces
