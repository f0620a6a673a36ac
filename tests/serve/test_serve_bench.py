"""``bench/serve_throughput.py`` at a toy size, so the benchmark cannot rot between the times someone runs it."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_benchmark_prints_its_tables(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    import serve_throughput

    argv = ["--model", str(tiny_model_dir), "--max-tokens", "3", "--concurrency", "1", "4", "--waves", "1"]
    assert serve_throughput.main([*argv, "--unbatched"]) == 0
    out = capsys.readouterr().out
    assert out.count("| concurrency | requests | requests/s |") == 2  # batched, then one at a time
    assert "| 1 | 8 |" in out and "| 4 | 4 |" in out
    sys.modules.pop("serve_throughput", None)
