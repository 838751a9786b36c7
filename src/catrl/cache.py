"""The call cache: every model call stored in SQLite (WAL), so a killed run resumes without
repeating a finished call. Keys hash the engine identity, the call kind, the messages, the
sampling (seed included) and n; values are the JSON results."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
  key TEXT PRIMARY KEY,
  engine TEXT NOT NULL,
  kind TEXT NOT NULL,
  request TEXT NOT NULL,
  result TEXT NOT NULL,
  created REAL NOT NULL
)
"""


def call_key(engine: str, kind: str, request: dict[str, Any]) -> str:
    blob = json.dumps({"engine": engine, "kind": kind, "request": request}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CallCache:
    """A durable key -> JSON store. Each put commits at once (WAL + synchronous=NORMAL survives SIGKILL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, engine: str, kind: str, request: dict[str, Any], result: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, engine, kind, request, result, created) VALUES (?, ?, ?, ?, ?, ?)",
                (key, engine, kind, json.dumps(request, ensure_ascii=False), json.dumps(result, ensure_ascii=False), time.time()),
            )

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM calls WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
