"""The SQLite verdict cache: round trips, WAL mode, concurrent writers (threads and processes), a killed writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medgspo.errors import ConfigError
from medgspo.judge.api.accounting import Judgment
from medgspo.judge.api.cache import JudgeCache, cache_key

WRITER = """
import sys, time
from medgspo.judge.api.accounting import Judgment
from medgspo.judge.api.cache import JudgeCache, cache_key
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
cache = JudgeCache(path)
i = 0
while count < 0 or i < count:
    # keys shared by all writers and keys of this writer alone
    cache.put(cache_key("m", "v1", "q", "r", f"shared-{i % 50}"), Judgment(2.0, "A"), model="m", prompt_version="v1")
    cache.put(cache_key("m", "v1", "q", "r", f"{name}-{i}"), Judgment(-0.5, "D"), model="m", prompt_version="v1")
    i += 1
"""


def put(cache: JudgeCache, answer: str, score: float = 2.0, label: str = "A") -> str:
    key = cache_key("deepseek-flash", "v1@abc", "问题", "参考", answer)
    cache.put(key, Judgment(score, label, reason="理由"), model="deepseek-flash", prompt_version="v1@abc")
    return key


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    with JudgeCache(path) as cache:
        key = put(cache, "急性阑尾炎")
        put(cache, "急性阑尾炎", score=-1.0, label="E")  # first verdict stored wins
        assert cache.get("missing") is None
    with JudgeCache(path) as cache:
        assert cache.get(key) == Judgment(2.0, "A", cached=True, reason="理由", source="cache")
        assert len(cache) == 1 and cache.integrity_ok()


def test_key_depends_on_every_field() -> None:
    base = ("deepseek-flash", "v1@abc", "问题", "参考", "回答")
    keys = {cache_key(*base)}
    for i in range(5):
        changed = list(base)
        changed[i] += "x"
        keys.add(cache_key(*changed))
    assert len(keys) == 6


def test_wal_mode(tmp_path: Path) -> None:
    JudgeCache(tmp_path / "c.sqlite").close()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failures_are_refused(tmp_path: Path) -> None:
    with JudgeCache(tmp_path / "c.sqlite") as cache, pytest.raises(ValueError, match="only successful"):
        cache.put("k", Judgment(None, error="timeout"), model="m", prompt_version="v1")


def test_get_many_beyond_the_sqlite_variable_limit() -> None:
    cache = JudgeCache(":memory:")
    keys = [put(cache, f"回答{i}") for i in range(1200)]
    assert len(cache.get_many(keys + ["missing"])) == 1200


def test_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot be used as a SQLite database"):
        JudgeCache(path)


def test_threads_share_one_handle(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "c.sqlite")
    errors: list[Exception] = []

    def work(n: int) -> None:
        try:
            for i in range(100):
                key = put(cache, f"t{n}-{i}")
                assert cache.get(key) is not None
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 800


def _writer(path: Path, name: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(count)])


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    writers = [_writer(path, f"w{n}", 300) for n in range(4)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
    with JudgeCache(path) as cache:
        assert len(cache) == 50 + 4 * 300  # shared keys once, own keys all
        assert cache.integrity_ok()


def test_killed_writer_leaves_a_consistent_cache(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    writer = _writer(path, "victim", -1)  # writes until killed
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if path.exists():
                with JudgeCache(path) as probe:
                    if len(probe) > 200:
                        break
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    with JudgeCache(path) as cache:
        assert cache.integrity_ok()
        before = len(cache)
        assert before > 200
        key = cache_key("m", "v1", "q", "r", "victim-0")
        assert cache.get(key).score == -0.5
        put(cache, "after the crash")
        assert len(cache) == before + 1
