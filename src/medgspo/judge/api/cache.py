"""A persistent verdict cache in SQLite (WAL mode), so identical answers are judged once and resumed runs pay
nothing twice.

The key is a SHA-256 of (judge model, prompt version, question, reference, answer as shown to the judge). Only
successful verdicts are stored. WAL mode with a busy timeout lets several processes (one per GPU rank, or a CLI run
beside training) read and write the same file; every write is its own transaction, so a process killed at any
moment leaves the database consistent and keeps everything committed before it died.

    >>> cache = JudgeCache(":memory:")
    >>> key = cache_key("deepseek-flash", "v1@abc", "问题", "参考", "回答")
    >>> cache.put(key, Judgment(2.0, "A", reason="一致"), model="deepseek-flash", prompt_version="v1@abc")
    >>> cache.get(key)
    Judgment(score=2.0, label='A', error=None, cached=True, reason='一致', source='cache')
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from medgspo.errors import ConfigError
from medgspo.judge.api.accounting import Judgment

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    score REAL NOT NULL,
    label TEXT,
    reason TEXT,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""
_BUSY_TIMEOUT_S = 60.0
_MAX_VARS = 500  # keys per SELECT ... IN (...)


def cache_key(model: str, prompt_version: str, question: str, reference: str, answer: str) -> str:
    """SHA-256 hex digest of the five things a verdict depends on."""
    payload = json.dumps([model, prompt_version, question, reference, answer], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """Thread-safe handle on one SQLite cache file (``":memory:"`` for a throwaway cache)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"judge cache {self.path} cannot be used as a SQLite database ({exc}); check --judge_cache"
            ) from None
        logger.debug("Judge cache at %s holds %d verdicts.", self.path, len(self))

    def get(self, key: str) -> Judgment | None:
        """The cached verdict for ``key``, or ``None``."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Judgment]:
        """Cached verdicts for the keys that have one."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Judgment] = {}
        with self._lock:
            for start in range(0, len(keys), _MAX_VARS):
                chunk = keys[start : start + _MAX_VARS]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, score, label, reason FROM judgments WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, score, label, reason in rows:
                    found[key] = Judgment(score, label, cached=True, reason=reason, source="cache")
        return found

    def put(self, key: str, judgment: Judgment, *, model: str, prompt_version: str) -> None:
        """Store a successful verdict (the first one stored for a key wins; failures are never stored)."""
        if judgment.score is None:
            raise ValueError("only successful verdicts are cached")
        row = (key, judgment.score, judgment.label, judgment.reason, model, prompt_version, time.time())
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` says ``ok``."""
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JudgeCache({self.path!r})"
