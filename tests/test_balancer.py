"""Replica balancing for the OpenAI-compatible engine: pure bookkeeping (fake clock) and real
failover between two llama.cpp server processes on loopback."""

from __future__ import annotations

import pytest

from catrl.engines.balancer import Balancer
from catrl.engines.openai import OpenAIConfig, OpenAIEngine
from catrl.types import ChatRequest, Sampling
from conftest import LlamaServer, free_port


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_least_loaded_spreads_and_prefers_idle_replicas():
    b = Balancer(["a", "b", "c"])
    held = [b.acquire() for _ in range(3)]
    assert sorted(r.url for r in held) == ["a", "b", "c"]
    b.release(held[1], ok=True)
    assert b.acquire().url == held[1].url  # the only idle one


def test_round_robin_cycles():
    b = Balancer(["a", "b"], policy="round_robin")
    picks = []
    for _ in range(4):
        r = b.acquire()
        picks.append(r.url)
        b.release(r, ok=True)
    assert picks == ["a", "b", "a", "b"]


def test_failed_replica_cools_down_then_gets_a_probe():
    clock = Clock()
    b = Balancer(["a", "b"], cooldown_s=1.0, clock=clock)
    a = next(r for r in b.replicas if r.url == "a")
    b.mark_down(a)
    b.mark_down(a)  # second consecutive failure: 2 s
    for _ in range(5):
        r = b.acquire()
        assert r.url == "b"
        b.release(r, ok=True)
    clock.t = 2.5
    got = {b.acquire().url for _ in range(2)}
    assert got == {"a", "b"}  # back in rotation after the cooldown


def test_all_down_uses_the_one_back_soonest():
    clock = Clock()
    b = Balancer(["a", "b"], cooldown_s=1.0, clock=clock)
    ra, rb = b.replicas
    b.mark_down(ra)
    b.mark_down(ra)
    b.mark_down(rb)
    assert b.acquire().url == "b"


def test_bad_arguments():
    with pytest.raises(ValueError):
        Balancer([])
    with pytest.raises(ValueError):
        Balancer(["a"], policy="random")


@pytest.mark.real_model
@pytest.mark.slow
def test_real_failover_between_two_servers(smol_path):
    s1, s2 = LlamaServer(smol_path, free_port()), LlamaServer(smol_path, free_port())
    s1.start()
    s2.start()
    try:
        eng = OpenAIEngine(OpenAIConfig(base_url=f"{s1.base_url},{s2.base_url}", model="smol", max_retries=3, backoff_s=0.1, timeout_s=60))
        reqs = [ChatRequest.user(f"Say {i}.") for i in range(4)]
        out = eng.generate(reqs, Sampling(max_tokens=8), n=1)
        assert all(g[0].text for g in out)
        assert all(r["served"] > 0 for r in eng.balancer.status())  # both replicas took work
        s1.kill()
        out = eng.generate(reqs, Sampling(max_tokens=8, seed=1), n=1)  # health check takes s1 out; s2 serves all
        assert all(g[0].text for g in out)
        status = {r["url"]: r for r in eng.balancer.status()}
        assert status[s1.base_url]["failures"] >= 1 and status[s2.base_url]["served"] >= 6  # s1 out, s2 took its work
    finally:
        s1.kill()
        s2.kill()
