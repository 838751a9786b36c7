"""Dataset loaders: packaged benchmarks by name, and any JSONL / Parquet / HF dataset with a field map.

A field map says which column holds each of catrl's fields (`question`, optional `id` and `gold`),
e.g. {"question": "problem"}. Errors name the file, the line and the field.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from catrl.errors import InputError
from catrl.types import Criterion, Example

PACKAGED = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "math": "math_test.jsonl.gz",  # the full 5,000-problem MATH test set
    "healthbench": "healthbench_eval.jsonl.gz",  # 500 conversations with physician rubrics
    "healthbench_hard20": "healthbench_hard20.jsonl",  # the first 20 of HealthBench "hard"
}
_MATH_FIELDS = {"question": "problem", "gold": "answer", "id": "unique_id"}
_HB_FIELDS = {"question": "prompt", "id": "prompt_id"}
PACKAGED_FIELDS = {"math500": _MATH_FIELDS, "math": _MATH_FIELDS, "healthbench": _HB_FIELDS, "healthbench_hard20": _HB_FIELDS}
ROLES = {"system", "user", "assistant", "developer"}
DEFAULT_FIELDS = {"question": "question", "id": "id", "gold": "answer"}


def gold_answer(source: str, gold: str | None) -> str | None:
    """The final answer inside a gold field: GSM8K solutions end in '#### X'."""
    if gold is None:
        return None
    if "####" in gold:
        return gold.rsplit("####", 1)[1].strip().replace(",", "")
    return gold.strip()


def parse_field_map(items: list[str] | None) -> dict[str, str]:
    """["question=problem", "gold=answer"] -> {"question": "problem", "gold": "answer"}."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, col = item.partition("=")
        if not sep or key not in DEFAULT_FIELDS or not col:
            raise InputError(f"bad --field {item!r}: expected FIELD=COLUMN with FIELD one of {', '.join(DEFAULT_FIELDS)}")
        out[key] = col
    return out


def _packaged_path(name: str) -> Path:
    return Path(str(resources.files("catrl") / "data" / PACKAGED[name]))


def iter_records(source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) pairs from a packaged name, a .jsonl/.json/.parquet file or an HF dataset dir."""
    if source in PACKAGED:
        yield from iter_jsonl(_packaged_path(source), label=source)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{source}: no such file, directory or packaged dataset (packaged: {', '.join(PACKAGED)})")
    if path.is_dir():
        yield from _iter_hf(path)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path)
    elif path.suffix in {".jsonl", ".json", ".ndjson"} or path.name.endswith((".jsonl.gz", ".ndjson.gz")):
        yield from iter_jsonl(path, label=str(path))
    else:
        raise InputError(f"{path}: unknown format {path.suffix!r}; use .jsonl (optionally .gz), .parquet or a saved HF dataset directory")


def iter_jsonl(path: Path, label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line, object) per non-empty line of a JSONL file (.gz too); bad lines stop with file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{label}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{label}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield f"{label}:{lineno}", rec


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds
        raise InputError(f"{path}: cannot read as Parquet: {e}") from None
    for i, rec in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", rec


def _iter_hf(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import datasets as hf
    except ImportError:
        raise InputError(f"{path}: reading a saved HF dataset needs `pip install 'catrl[hf]'`") from None
    ds = hf.load_from_disk(str(path))
    if isinstance(ds, hf.DatasetDict):
        split = "test" if "test" in ds else next(iter(ds))
        ds = ds[split]
    for i, rec in enumerate(ds):
        yield f"{path}:row {i}", rec


def _messages(where: str, col: str, value: list) -> list[dict[str, str]]:
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: field {col!r}, message {k}: expected {{\"role\": one of {sorted(ROLES)}, \"content\": string}}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" for m in out):
        raise InputError(f"{where}: field {col!r} has no user message")
    return out


def _criteria(where: str, value: Any) -> list[Criterion]:
    """HealthBench rubric items: {criterion, points, tags}."""
    if not isinstance(value, list):
        raise InputError(f"{where}: field 'rubrics' must be a list of {{criterion, points, tags}}")
    out = []
    for k, r in enumerate(value):
        ok = isinstance(r, dict) and isinstance(r.get("criterion"), str) and isinstance(r.get("points"), int | float)
        if not ok or isinstance(r.get("points"), bool):
            raise InputError(f"{where}: field 'rubrics', item {k}: expected {{\"criterion\": string, \"points\": number, \"tags\": [..]}}")
        out.append(Criterion(r["criterion"], float(r["points"]), [str(t) for t in r.get("tags") or []]))
    return out


def load_examples(source: str, field_map: dict[str, str] | None = None, limit: int | None = None) -> list[Example]:
    """Rows of a dataset as Examples. The question field must exist; id and gold are optional."""
    fm = {**DEFAULT_FIELDS, **PACKAGED_FIELDS.get(source, {}), **(field_map or {})}
    out: list[Example] = []
    for where, rec in iter_records(source):
        if limit is not None and len(out) >= limit:
            break
        qcol = fm["question"]
        if qcol not in rec:
            have = ", ".join(sorted(rec)) or "none"
            raise InputError(
                f"{where}: no field {qcol!r} for the question (fields here: {have}); "
                f"choose the question field with --field question=COLUMN"
            )
        q = rec[qcol]
        messages = None
        if isinstance(q, list):  # a chat: HealthBench's format, or any list of {role, content}
            messages = _messages(where, qcol, q)
            q = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        elif not isinstance(q, str) or not q.strip():
            raise InputError(f"{where}: field {qcol!r} must be a non-empty string or a list of chat messages")
        rid = rec.get(fm["id"])
        gold = rec.get(fm["gold"])
        out.append(
            Example(
                id=str(rid) if rid is not None else str(len(out)),
                question=q,
                gold=str(gold) if gold is not None else None,
                source=where,
                messages=messages,
                criteria=_criteria(where, rec["rubrics"]) if "rubrics" in rec else None,
                tags=[str(t) for t in rec.get("example_tags") or []],
            )
        )
    ids = [e.id for e in out]
    if len(set(ids)) != len(ids):
        raise InputError(f"{source}: the id field {fm['id']!r} has duplicate values; ids must be unique")
    return out
