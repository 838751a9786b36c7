"""Generation backends behind one protocol (see base.py)."""

from catrl.engines.base import CachedEngine, Engine, OnResult

__all__ = ["CachedEngine", "Engine", "OnResult"]
