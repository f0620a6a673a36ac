"""Where the package's own files are, and how a user's path is told from a Hub id (pure)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
RESOURCES = PACKAGE_DIR / "resources"
RECIPES = PACKAGE_DIR / "recipes"  # `recipes/` at the repository root links here
DATA_DIR = RESOURCES / "data"  # `data/` at the repository root links here


def looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id (``owner/name``): starts with ``.``, ``/`` or ``~``, or has 2+ slashes.

    >>> looks_like_path("Qwen/Qwen3.5-4B"), looks_like_path("./runs/sft"), looks_like_path("/models/a/b")
    (False, True, True)
    """
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name
