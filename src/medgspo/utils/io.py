"""Result files written atomically (a temporary file renamed into place), as strict UTF-8 JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """NaN and infinities become ``null`` so every file is strict JSON.

    >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically; a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line (UTF-8, atomically)."""
    return write_text(path, "".join(json.dumps(json_safe(row), ensure_ascii=False) + "\n" for row in rows))


def write_json(path: str | Path, data: Any) -> Path:
    """Write indented UTF-8 JSON (atomically)."""
    return write_text(path, json.dumps(json_safe(data), ensure_ascii=False, indent=2, default=str) + "\n")
