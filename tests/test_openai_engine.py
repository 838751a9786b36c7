"""The OpenAI-compatible engine: retry/fan-out logic against a scripted transport, and the real
thing against llama-cpp-python's server process on 127.0.0.1 (killed and restarted mid-run)."""

import threading
import time

import httpx
import pytest

from catrl.engines.openai import OpenAIConfig, OpenAIEngine
from catrl.errors import EngineError
from catrl.types import ChatRequest, Sampling

from conftest import free_port


def _reply(n_choices, text="hi"):
    return {
        "choices": [{"message": {"content": f"{text}{i}"}, "finish_reason": "stop"} for i in range(n_choices)],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2 * n_choices},
    }


def _engine(handler, **kw):
    eng = OpenAIEngine(OpenAIConfig(base_url="http://test/v1", model="m", backoff_s=0.01, max_backoff_s=0.02, **kw))
    transport = httpx.MockTransport(handler)
    orig = httpx.AsyncClient

    class Patched(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, transport=transport, **{x: y for x, y in k.items() if x != "transport"})

    return eng, Patched


def test_retries_429_and_5xx_then_succeeds(monkeypatch):
    codes = iter([429, 503, 500])

    def handler(request):
        code = next(codes, 200)
        return httpx.Response(code, json=_reply(1) if code == 200 else {"error": "busy"})

    eng, patched = _engine(handler)
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    out = eng.generate([ChatRequest.user("q")], Sampling(), n=1)
    assert out[0][0].text == "hi0"


def test_gives_up_with_an_error_naming_server_and_request(monkeypatch):
    eng, patched = _engine(lambda r: httpx.Response(503, text="overloaded"), max_retries=2)
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    with pytest.raises(EngineError) as e:
        eng.generate([ChatRequest.user("q", id="row-7")], Sampling(), n=1)
    assert "http://test/v1" in str(e.value) and "row-7" in str(e.value) and "3 attempts" in str(e.value)


def test_client_errors_are_not_retried(monkeypatch):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, text="bad top_k")

    eng, patched = _engine(handler)
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    with pytest.raises(EngineError, match="HTTP 400"):
        eng.generate([ChatRequest.user("q")], Sampling(), n=1)
    assert len(calls) == 1


# the 400 bodies of servers asked for more than their context holds (wording of each server)
OVERFLOW_BODIES = {
    "openai, llama-cpp-python": {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested 3100 tokens "
                                           "(2600 in the messages, 500 in the completion).", "code": "context_length_exceeded"}},
    "llama.cpp server": {"error": {"code": 400, "type": "exceed_context_size_error",
                                   "message": "request (9412 tokens) exceeds the available context size (8192 tokens), try increasing it"}},
    "vllm, max_tokens": {"object": "error", "message": "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum "
                         "context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).", "code": 400},
    "vllm, prompt": {"object": "error", "message": "The decoder prompt (length 5000) is longer than the maximum model length of 4096.", "code": 400},
    "sglang": {"object": "error", "message": "The input (5000 tokens) is longer than the model's context length (4096 tokens).", "code": 400},
}


@pytest.mark.parametrize("server", sorted(OVERFLOW_BODIES))
def test_a_request_past_the_servers_context_ends_alone_as_prompt_too_long(monkeypatch, server):
    calls = []

    def handler(request):
        calls.append(1)
        if b"LONG" in request.content:
            return httpx.Response(400, json=OVERFLOW_BODIES[server])
        return httpx.Response(200, json=_reply(2))

    eng, patched = _engine(handler)
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    out = eng.generate([ChatRequest.user("LONG " * 50), ChatRequest.user("short")], Sampling(logprobs=True), n=2)
    assert [(c.text, c.finish_reason, c.completion_tokens, c.logprobs) for c in out[0]] == [("", "prompt_too_long", 0, [])] * 2
    assert [c.text for c in out[1]] == ["hi0", "hi1"]
    assert len(calls) == 2  # no retry
    assert eng._native_n is True  # learned from the short request only


def test_other_client_errors_still_fail_the_batch(monkeypatch):
    eng, patched = _engine(lambda r: httpx.Response(400, json={"error": {"message": "top_k must be positive", "code": "invalid_value"}}))
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    with pytest.raises(EngineError, match="top_k must be positive"):
        eng.generate([ChatRequest.user("q")], Sampling(), n=1)


def test_fans_out_when_server_ignores_n(monkeypatch):
    seeds = []

    def handler(request):
        import json

        body = json.loads(request.content)
        seeds.append((body["n"], body["seed"]))
        return httpx.Response(200, json=_reply(1, text=f"s{body['seed']}-"))

    eng, patched = _engine(handler)
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    out = eng.generate([ChatRequest.user("q")], Sampling(seed=10), n=3)
    assert [c.text for c in out[0]] == ["s10-0", "s11-0", "s12-0"]
    assert seeds[0] == (3, 10) and sorted(seeds[1:]) == [(1, 11), (1, 12)]


def test_native_n_is_used_when_supported(monkeypatch):
    eng, patched = _engine(lambda r: httpx.Response(200, json=_reply(4)))
    monkeypatch.setattr(httpx, "AsyncClient", patched)
    out = eng.generate([ChatRequest.user("q")], Sampling(), n=4)
    assert [c.text for c in out[0]] == ["hi0", "hi1", "hi2", "hi3"]


def test_unreachable_server_fails_within_bounded_time():
    port = free_port()  # nothing listens here
    eng = OpenAIEngine(OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=3, backoff_s=0.1))
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=f"127.0.0.1:{port}"):
        eng.generate([ChatRequest.user("q", id="r1")], Sampling(), n=1)
    assert time.monotonic() - t0 < 5


@pytest.mark.real_model
def test_real_server_generate_n_and_logprobs(llama_server):
    eng = OpenAIEngine(OpenAIConfig(base_url=llama_server.base_url, model="smol", concurrency=2))
    reqs = [ChatRequest.user("What is 2+3?"), ChatRequest.user("Name a color.")]
    out = eng.generate(reqs, Sampling(temperature=0.8, max_tokens=16, seed=1, logprobs=True), n=3)
    assert [len(g) for g in out] == [3, 3]
    for g in out:
        assert all(c.text and c.completion_tokens > 0 for c in g)
        assert all(c.logprobs and all(t.logprob <= 0 for t in c.logprobs) for c in g)
    assert eng._native_n is False  # llama-cpp-python's server ignores n: the engine fanned out


@pytest.mark.real_model
def test_real_server_prompt_past_its_context_is_prompt_too_long_and_not_cached(llama_server, tmp_path):
    """llama-cpp-python's server (n_ctx 2048) answers 400 context_length_exceeded to the long prompt: that
    request alone ends prompt_too_long, the other is sampled, and only the sampled one is cached."""
    from catrl.cache import CallCache
    from catrl.engines.base import CachedEngine

    inner = OpenAIEngine(OpenAIConfig(base_url=llama_server.base_url, model="smol", concurrency=2))
    eng = CachedEngine(inner, CallCache(tmp_path / "c.sqlite"))
    reqs = [ChatRequest.user("Repeat after me: " + "apple banana cherry " * 900), ChatRequest.user("What is 2+3?")]
    sampling = Sampling(temperature=0.5, max_tokens=8, seed=1)
    out = eng.generate(reqs, sampling, n=2)
    assert [c.finish_reason for c in out[0]] == ["prompt_too_long"] * 2 and all(c.text == "" for c in out[0])
    assert all(c.text and c.finish_reason in ("stop", "length") for c in out[1])
    assert eng.cache.count("generate") == 1


@pytest.mark.real_model
def test_real_server_killed_and_restarted_mid_run(llama_server):
    """Requests in flight when the server dies are retried and finish once it is back."""
    eng = OpenAIEngine(OpenAIConfig(base_url=llama_server.base_url, model="smol", concurrency=2, max_retries=8, backoff_s=0.5, max_backoff_s=4))
    reqs = [ChatRequest.user(f"Count from 1 to {k}.", id=f"r{k}") for k in range(3, 11)]
    done = []

    def chaos():
        while not done:
            time.sleep(0.1)
        llama_server.kill()
        time.sleep(1.0)
        llama_server.start()

    t = threading.Thread(target=chaos)
    t.start()
    out = eng.generate(reqs, Sampling(temperature=0.5, max_tokens=48, seed=2), n=1, on_result=lambda i, c: done.append(i))
    t.join()
    assert [len(g) for g in out] == [1] * len(reqs)
    assert all(g[0].text for g in out)
