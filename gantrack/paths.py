"""Where gantrack keeps its files on this machine: one place for the folders and the variables that move them.

- ``cache_dir(name)``: ``$GANTRACK_CACHE_DIR`` (default ``~/.cache/gantrack``) / name — the parquet and
  per-sample caches, the diversity references, the core claims and study locks;
- ``own_dir(variable, name)``: folders with a variable of their own (``GANTRACK_SPOOL_DIR``,
  ``GANTRACK_CHECKPOINT_DIR``, ``GANTRACK_LOG_DIR``), default ``~/.cache/gantrack/<name>``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _home_cache() -> Path:
    return Path.home() / ".cache" / "gantrack"


def cache_dir(name: str = "") -> Path:
    root = Path(os.environ.get("GANTRACK_CACHE_DIR") or _home_cache())
    return root / name if name else root


def own_dir(variable: str, name: str) -> Path:
    return Path(os.environ.get(variable) or _home_cache() / name)
