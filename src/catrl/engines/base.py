"""The engine protocol every model call goes through, and the cache wrapper around it.

An engine turns chat requests into n sampled completions each (`generate`) and, where it can,
scores a given continuation under the model (`score`, teacher forcing). The policy, the anchor
and the judge are three engine handles; at test time they may be the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from catrl.cache import CallCache, call_key
from catrl.errors import EngineError
from catrl.types import CONTEXT_BOUND, ChatRequest, Completion, Sampling, ScoredContinuation

OnResult = Callable[[int, list[Completion]], None]
"""Called with (request index, its n completions) as soon as one request is complete."""


@runtime_checkable
class Engine(Protocol):
    identity: str  # what cache keys hash: model sha256, or server URL + model name
    supports_logprobs: bool
    supports_scoring: bool

    def generate(
        self, requests: Sequence[ChatRequest], sampling: Sampling, n: int = 1, on_result: OnResult | None = None
    ) -> list[list[Completion]]:
        """n completions per request, in request order."""
        ...

    def score(self, requests: Sequence[ChatRequest], continuations: Sequence[str]) -> list[ScoredContinuation]:
        """Per-token logprobs of continuations[i] as the assistant's reply to requests[i]."""
        ...

    def close(self) -> None: ...


def require_scoring(engine: Engine) -> None:
    if not engine.supports_scoring:
        raise EngineError(
            f"engine {engine.identity} cannot score continuations (no prompt logprobs); use the embedded "
            "llama.cpp engine (--model NAME|PATH.gguf) or a vLLM server, which returns prompt_logprobs"
        )


def _generate_request(req: ChatRequest, sampling: Sampling, n: int) -> dict:
    return {"messages": req.to_list(), "sampling": sampling.to_dict(), "n": n}


class CachedEngine:
    """Wraps an engine so every finished call is stored at once and never made again."""

    def __init__(self, inner: Engine, cache: CallCache, track_keys: bool = False):
        self.inner = inner
        self.cache = cache
        self.identity = inner.identity
        self.supports_logprobs = inner.supports_logprobs
        self.supports_scoring = inner.supports_scoring
        self.calls_made = 0  # requests that reached the inner engine
        self.keys_used: set[str] | None = set() if track_keys else None  # with track_keys, every call served, cached or new (a run's export)

    def generate(
        self, requests: Sequence[ChatRequest], sampling: Sampling, n: int = 1, on_result: OnResult | None = None
    ) -> list[list[Completion]]:
        out: list[list[Completion] | None] = [None] * len(requests)
        keys = [call_key(self.identity, "generate", _generate_request(r, sampling, n)) for r in requests]
        if self.keys_used is not None:
            self.keys_used.update(keys)
        missing: list[int] = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is None:
                missing.append(i)
                continue
            comps = [Completion.from_dict(c) for c in hit]
            for c in comps:
                c.cached = True
            out[i] = comps
            if on_result:
                on_result(i, comps)

        def store(j: int, comps: list[Completion]) -> None:
            i = missing[j]
            if not any(c.finish_reason in CONTEXT_BOUND for c in comps):  # those depend on --ctx, not on the key
                self.cache.put(keys[i], self.identity, "generate", _generate_request(requests[i], sampling, n), [c.to_dict() for c in comps])
            out[i] = comps
            if on_result:
                on_result(i, comps)

        if missing:
            self.calls_made += len(missing)
            results = self.inner.generate([requests[i] for i in missing], sampling, n, on_result=store)
            for j, comps in enumerate(results):  # engines that do not call on_result still get stored
                if out[missing[j]] is None:
                    store(j, comps)
        return out  # type: ignore[return-value]

    def score(self, requests: Sequence[ChatRequest], continuations: Sequence[str]) -> list[ScoredContinuation]:
        require_scoring(self.inner)
        out: list[ScoredContinuation | None] = [None] * len(requests)
        payloads = [{"messages": r.to_list(), "continuation": c} for r, c in zip(requests, continuations, strict=True)]
        keys = [call_key(self.identity, "score", p) for p in payloads]
        if self.keys_used is not None:
            self.keys_used.update(keys)
        missing = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is None:
                missing.append(i)
            else:
                out[i] = ScoredContinuation.from_dict(hit)
        if missing:
            self.calls_made += len(missing)
            scored = self.inner.score([requests[i] for i in missing], [continuations[i] for i in missing])
            for i, s in zip(missing, scored, strict=True):
                self.cache.put(keys[i], self.identity, "score", payloads[i], s.to_dict())
                out[i] = s
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.inner.close()
