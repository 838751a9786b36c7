"""`catrl generate`: n samples per dataset row, written as JSONL in row order, resumable.

Rows already in the output file are skipped; every finished model call is in the call cache, so a
run killed at any point and started again repeats no finished call. Output schema, one line a row:
{"id", "question", "prompt", "engine", "sampling", "n",
 "samples": [{"text", "finish_reason", "prompt_tokens", "completion_tokens"}]}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catrl import prompting
from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.types import ChatRequest, Completion, Example, Sampling

log = logging.getLogger(__name__)


@dataclass
class GenerateStats:
    rows: int = 0  # rows in the output when done
    resumed: int = 0  # rows found already written
    written: int = 0  # rows written by this run
    completion_tokens: int = 0  # tokens of the rows written by this run
    calls_made: int = 0  # requests that reached the model (not served by the cache)


def build_request(example: Example, prompt: str) -> ChatRequest:
    """The policy's request: a chat example (HealthBench) is sent as its own conversation; a plain
    question goes through the prompt template."""
    if example.messages is not None:
        return ChatRequest(messages=tuple(dict(m) for m in example.messages), id=example.id)
    return ChatRequest.user(prompting.render(prompt, question=example.question), id=example.id)


def read_done(path: Path) -> set[str]:
    """Ids already written; a torn last line (the run was killed mid-write) is cut off."""
    if not path.exists():
        return set()
    done: set[str] = set()
    good_bytes = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(str(json.loads(raw)["id"]))
            except (ValueError, KeyError):
                raise InputError(f"{path}:{lineno}: not a catrl generate record; use another --output or delete it") from None
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        log.warning("%s: dropping a torn last line left by an interrupted run", path)
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return done


def record(example: Example, req: ChatRequest, engine: Engine, sampling: Sampling, comps: list[Completion]) -> dict:
    return {
        "id": example.id,
        "question": example.question,
        "prompt": req.to_list(),
        "engine": engine.identity,
        "sampling": sampling.to_dict(),
        "n": len(comps),
        "samples": [
            {"text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}
            for c in comps
        ],
    }


def generate_file(
    engine: Engine,
    examples: list[Example],
    sampling: Sampling,
    n: int,
    out_path: Path,
    prompt: str = "solve",
    on_row: Callable[[int, int], None] | None = None,
) -> GenerateStats:
    """Sample n completions per example into out_path (JSONL, in example order), resuming if it exists."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out_path)
    todo = [e for e in examples if e.id not in done]
    stats = GenerateStats(resumed=len(examples) - len(todo))
    requests = [build_request(e, prompt) for e in todo]
    calls_before = getattr(engine, "calls_made", 0)
    ready: dict[int, list[Completion]] = {}
    next_row = 0

    with open(out_path, "a", encoding="utf-8") as out:

        def on_result(i: int, comps: list[Completion]) -> None:
            nonlocal next_row
            ready[i] = comps
            while next_row in ready:  # keep the file in row order
                c = ready.pop(next_row)
                out.write(json.dumps(record(todo[next_row], requests[next_row], engine, sampling, c), ensure_ascii=False) + "\n")
                out.flush()
                stats.written += 1
                stats.completion_tokens += sum(x.completion_tokens for x in c)
                next_row += 1
                if on_row:
                    on_row(stats.resumed + stats.written, len(examples))

        if on_row:
            on_row(stats.resumed, len(examples))
        if requests:
            engine.generate(requests, sampling, n, on_result=on_result)
        os.fsync(out.fileno())
    stats.rows = stats.resumed + stats.written
    stats.calls_made = getattr(engine, "calls_made", calls_before + len(requests)) - calls_before
    return stats
