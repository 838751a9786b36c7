"""The call cache and the cached engine wrapper (orchestration; a fake engine counts calls)."""

from catrl.cache import CallCache, call_key
from catrl.engines.base import CachedEngine
from catrl.types import ChatRequest, Completion, Sampling, ScoredContinuation, TokenLogprob


class CountingEngine:
    identity = "fake:1"
    supports_logprobs = True
    supports_scoring = True

    def __init__(self):
        self.seen: list[str] = []

    def generate(self, requests, sampling, n=1, on_result=None):
        out = []
        for i, r in enumerate(requests):
            self.seen.append(r.messages[-1]["content"])
            comps = [Completion(f"{r.messages[-1]['content']}#{sampling.seed}#{j}", "stop", 3, 2) for j in range(n)]
            if on_result:
                on_result(i, comps)
            out.append(comps)
        return out

    def score(self, requests, continuations):
        self.seen.extend(continuations)
        return [ScoredContinuation([TokenLogprob("x", -1.0)]) for _ in continuations]

    def close(self):
        pass


def test_cached_engine_makes_each_call_once(tmp_path):
    inner = CountingEngine()
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    reqs = [ChatRequest.user("a"), ChatRequest.user("b")]
    first = eng.generate(reqs, Sampling(seed=1), n=2)
    again = eng.generate(reqs + [ChatRequest.user("c")], Sampling(seed=1), n=2)
    assert inner.seen == ["a", "b", "c"]
    assert [c.text for c in again[0]] == [c.text for c in first[0]]
    assert all(c.cached for c in again[0]) and not again[2][0].cached
    assert eng.calls_made == 3


def test_cache_survives_reopen(tmp_path):
    inner = CountingEngine()
    CachedEngine(inner, CallCache(tmp_path / "c.sqlite")).generate([ChatRequest.user("a")], Sampling(), n=1)
    eng2 = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    eng2.generate([ChatRequest.user("a")], Sampling(), n=1)
    assert inner.seen == ["a"] and eng2.calls_made == 0


def test_key_depends_on_engine_messages_sampling_seed_and_n():
    req = {"messages": [{"role": "user", "content": "q"}], "sampling": Sampling().to_dict(), "n": 2}
    base = call_key("e1", "generate", req)
    assert base == call_key("e1", "generate", dict(req))
    assert base != call_key("e2", "generate", req)
    assert base != call_key("e1", "generate", {**req, "n": 3})
    assert base != call_key("e1", "generate", {**req, "sampling": Sampling(seed=1).to_dict()})
    assert base != call_key("e1", "generate", {**req, "sampling": Sampling(temperature=1.0).to_dict()})
    assert base != call_key("e1", "generate", {**req, "messages": [{"role": "user", "content": "q2"}]})


def test_request_id_is_not_part_of_the_key(tmp_path):
    inner = CountingEngine()
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    eng.generate([ChatRequest.user("a", id="row-1")], Sampling(), n=1)
    eng.generate([ChatRequest.user("a", id="row-2")], Sampling(), n=1)
    assert inner.seen == ["a"]


def test_scores_are_cached(tmp_path):
    inner = CountingEngine()
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    r = [ChatRequest.user("a")]
    assert eng.score(r, ["cont"])[0].mean_nll == 1.0
    eng.score(r, ["cont"])
    assert inner.seen == ["cont"]
