"""Where catrl keeps its files: one user cache directory, overridable by CATRL_CACHE_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """Root of catrl's cache: models/ and the call cache live here."""
    root = os.environ.get("CATRL_CACHE_DIR")
    return Path(root).expanduser() if root else Path(user_cache_dir("catrl"))


def models_dir() -> Path:
    return cache_dir() / "models"


def default_call_cache() -> Path:
    return cache_dir() / "calls.sqlite"
