"""The call cache: every model call stored in SQLite (WAL), so a killed run resumes without
repeating a finished call. Keys hash the engine identity, the call kind, the messages, the
sampling (seed included) and n; values are the JSON results."""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from catrl.errors import InputError

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

    def summary(self) -> list[tuple[str, str, int]]:
        """(engine, kind, calls) for every engine identity and call kind held."""
        with self._lock:
            return self._db.execute("SELECT engine, kind, COUNT(*) FROM calls GROUP BY engine, kind ORDER BY engine, kind").fetchall()

    def rows(self, engine_contains: str | None = None, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored calls as plain dicts (oldest first), optionally only engines whose identity contains a string."""
        sql, args = "SELECT engine, kind, request, result, created FROM calls WHERE 1=1", []
        if engine_contains:
            sql, args = sql + " AND instr(engine, ?) > 0", [*args, engine_contains]
        if kind:
            sql, args = sql + " AND kind = ?", [*args, kind]
        with self._lock:
            fetched = self._db.execute(sql + " ORDER BY created, key", args).fetchall()
        for engine, kind_, request, result, created in fetched:
            yield {"engine": engine, "kind": kind_, "request": json.loads(request), "result": json.loads(result), "created": created}

    def add_if_absent(self, engine: str, kind: str, request: dict[str, Any], result: Any, created: float) -> bool:
        """Store a call unless its key is already held (a local result always wins). True if stored."""
        key = call_key(engine, kind, request)
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO calls (key, engine, kind, request, result, created) VALUES (?, ?, ?, ?, ?, ?)",
                (key, engine, kind, json.dumps(request, ensure_ascii=False), json.dumps(result, ensure_ascii=False), created),
            )
            return cur.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- moving calls between caches (machines): JSONL, gzip when the name ends in .gz ---------------
CALL_FIELDS = {"engine": str, "kind": str, "request": dict}


def export_calls(cache: CallCache, path: str | Path, engine_contains: str | None = None, kind: str | None = None,
                 logprob_digits: int | None = None, exclude: Iterable[str] = (), only: Iterable[str] | None = None) -> int:
    """Write the cache's calls as JSONL (one call a line: engine, kind, request, result, created), so a
    run's exact model calls travel with its report and another machine replays them for free.
    `logprob_digits` rounds every token logprob: at 4 digits (error <= 5e-5 nats) a GSM8K group of 8
    rollouts with logprobs takes a third of its full-precision size in gzip, small enough for git.
    `exclude`: call keys to leave out (calls another export already carries); `only`: the keys to write
    (a run's own calls, where the cache holds other runs' too)."""
    path = Path(path)
    skip = set(exclude)
    keep = None if only is None else set(only)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else open(path, "w", encoding="utf-8") as f:
        for row in cache.rows(engine_contains, kind):
            if skip or keep is not None:
                key = call_key(row["engine"], row["kind"], row["request"])
                if key in skip or (keep is not None and key not in keep):
                    continue
            if logprob_digits is not None:
                row["result"] = _round_logprobs(row["result"], logprob_digits)
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def _round_logprobs(value: Any, digits: int) -> Any:
    """A result with every number under a "logprob" key rounded (completions and scorings alike)."""
    if isinstance(value, list):
        return [_round_logprobs(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: round(v, digits) if k == "logprob" and isinstance(v, float) else _round_logprobs(v, digits) for k, v in value.items()}
    return value


def import_calls(cache: CallCache, path: str | Path) -> tuple[int, int]:
    """Add the calls of an export to a cache; calls it already holds are kept. Returns (added, already held).
    The key is recomputed from each line, so a line can only ever answer the request it states."""
    from catrl.datasets import iter_jsonl

    path = Path(path)
    added = held = 0
    try:
        for where, row in iter_jsonl(path, str(path)):
            row = _checked_call(where, row)
            if cache.add_if_absent(row["engine"], row["kind"], row["request"], row["result"], row["created"]):
                added += 1
            else:
                held += 1
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such call export") from e
    except (OSError, EOFError, UnicodeDecodeError) as e:  # a truncated or non-gzip file
        raise InputError(f"{path}: not a readable call export ({e})") from e
    return added, held


def _checked_call(where: str, row: dict[str, Any]) -> dict[str, Any]:
    for field in (*CALL_FIELDS, "result"):
        if field not in row:
            raise InputError(f"{where}: field {field!r} is missing")
    for field, typ in CALL_FIELDS.items():
        if not isinstance(row[field], typ):
            raise InputError(f"{where}: field {field!r} must be a {typ.__name__}, not {type(row[field]).__name__}")
    created = row.get("created", time.time())
    if not isinstance(created, int | float):
        raise InputError(f"{where}: field 'created' must be a number of seconds")
    return {**row, "created": float(created)}
