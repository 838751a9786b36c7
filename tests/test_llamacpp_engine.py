"""The embedded engine against a real model (SmolLM2-135M)."""

import pytest

from catrl.errors import EngineError, InputError
from catrl.types import ChatRequest, Sampling

pytestmark = pytest.mark.real_model

REQS = [ChatRequest.user("What is 2+3? Explain."), ChatRequest.user("Name a color and describe it."), ChatRequest.user("Write a haiku about the sea.")]


def test_chat_template_comes_from_the_gguf(smol_engine):
    text = smol_engine.render(ChatRequest.user("hello"))
    assert "<|im_start|>user\nhello<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_generate_returns_n_completions_with_counts_and_logprobs(smol_engine):
    out = smol_engine.generate(REQS[:2], Sampling(temperature=0.7, max_tokens=24, seed=3, logprobs=True), n=3)
    assert [len(g) for g in out] == [3, 3]
    for group in out:
        assert len({c.text for c in group}) > 1  # different seeds per sample
        for c in group:
            assert c.finish_reason in {"stop", "length"}
            assert 0 < c.completion_tokens <= 24 and c.prompt_tokens > 5
            assert len(c.logprobs) == c.completion_tokens and all(t.logprob <= 0 for t in c.logprobs)


def test_seeded_sampling_is_reproducible_and_batch_independent(smol_engine):
    s = Sampling(temperature=0.9, max_tokens=32, seed=11)
    together = smol_engine.generate(REQS, s, n=2)
    again = smol_engine.generate(REQS, s, n=2)
    alone = [smol_engine.generate([r], s, n=2)[0] for r in REQS]
    text = lambda groups: [[c.text for c in g] for g in groups]  # noqa: E731
    assert text(together) == text(again) == text(alone)
    other = smol_engine.generate(REQS[:1], Sampling(temperature=0.9, max_tokens=32, seed=12), n=2)
    assert text(other) != text(together[:1])


def test_score_agrees_with_generate_logprobs(smol_engine):
    """Teacher forcing the sampled text reproduces the sampler's own logprobs. Scoring prefills the
    continuation in one batch while sampling decoded it token by token; llama.cpp's attention kernels
    differ between the two, so the match is close, not exact: mean |diff| < 0.06, max < 0.5 nats (measured on Qwen2.5-1.5B, 2048 tokens: mean 0.009, max 0.28; docs/bench/score_agreement.txt)."""
    out = smol_engine.generate(REQS, Sampling(temperature=0.8, max_tokens=40, seed=5, logprobs=True), n=2)
    worst, compared, total = 0.0, 0, 0.0
    for req, group in zip(REQS, out):
        scored = smol_engine.score([req] * len(group), [c.text for c in group])
        for c, s in zip(group, scored):
            pairs = list(zip(c.logprobs, s.tokens))
            cut = next((k for k, (a, b) in enumerate(pairs) if a.token != b.token), len(pairs))
            pairs = pairs[:cut]  # compare while both tokenizations agree
            compared += len(pairs)
            worst = max([worst] + [abs(a.logprob - b.logprob) for a, b in pairs])
            total += sum(abs(a.logprob - b.logprob) for a, b in pairs)
    assert compared > 100
    assert total / compared < 0.06 and worst < 0.5, (total / compared, worst)


def test_batched_logprobs_match_a_per_row_float64_softmax(smol_engine, monkeypatch):
    """Logprobs come from one numpy pass over all output rows of a decode; the same tokens scored row
    by row in float64 through llama_get_logits_ith agree, so rows map to the right sequences."""
    import numpy as np

    def per_row(n_out, block=64):  # output j through llama.cpp's own indexing (negative: j-th of the outputs)
        rows = [smol_engine._logits(j - n_out).astype(np.float64) for j in range(n_out)]
        return np.array([r.max() + np.log(np.exp(r - r.max()).sum()) for r in rows])

    s = Sampling(temperature=0.8, max_tokens=24, seed=7, logprobs=True)
    fast = smol_engine.generate(REQS, s, n=3)
    fast_scored = smol_engine.score([REQS[0]] * 2, [fast[0][0].text, fast[1][1].text])
    monkeypatch.setattr(smol_engine, "_output_logsumexp", per_row)
    slow = smol_engine.generate(REQS, s, n=3)
    slow_scored = smol_engine.score([REQS[0]] * 2, [fast[0][0].text, fast[1][1].text])
    pairs = [(a, b) for gf, gs in zip(fast, slow) for cf, cs in zip(gf, gs) for a, b in zip(cf.logprobs, cs.logprobs, strict=True)]
    pairs += [(a, b) for sf, ss in zip(fast_scored, slow_scored) for a, b in zip(sf.tokens, ss.tokens, strict=True)]
    assert len(pairs) > 150
    assert all(a.token == b.token and abs(a.logprob - b.logprob) < 1e-4 for a, b in pairs)


def test_greedy_max_tokens_and_stop(smol_engine):
    g = smol_engine.generate(REQS[:1], Sampling(temperature=0, max_tokens=8), n=2)[0]
    assert g[0].text == g[1].text and g[0].finish_reason == "length" and g[0].completion_tokens == 8
    full = smol_engine.generate(REQS[:1], Sampling(temperature=0, max_tokens=40), n=1)[0][0].text
    word = full.split()[3]
    cut = smol_engine.generate(REQS[:1], Sampling(temperature=0, max_tokens=40, stop=(word,)), n=1)[0][0]
    assert cut.finish_reason == "stop" and word not in cut.text and full.startswith(cut.text)


def test_more_samples_than_slots_and_callbacks(smol_engine):
    seen = []
    out = smol_engine.generate(REQS, Sampling(max_tokens=6, seed=1), n=7, on_result=lambda i, c: seen.append((i, len(c))))
    assert [len(g) for g in out] == [7, 7, 7]
    assert sorted(seen) == [(0, 7), (1, 7), (2, 7)]


def test_a_prompt_too_long_fails_alone_and_is_not_cached(smol_engine, tmp_path):
    """One over-long group must not sink the batch: it gets n empty `prompt_too_long` completions
    (logprobs [] so min-PPL never picks them), the others decode as they would alone, and the cache
    keeps only the calls that do not depend on the context size."""
    from catrl.cache import CallCache
    from catrl.engines.base import CachedEngine

    long = ChatRequest.user("word " * 2000)
    s = Sampling(temperature=0, max_tokens=8, logprobs=True)
    seen = []
    cached = CachedEngine(smol_engine, CallCache(tmp_path / "c.sqlite"))
    out = cached.generate([REQS[0], long], s, n=2, on_result=lambda i, c: seen.append(i))
    assert sorted(seen) == [0, 1]
    assert [(c.text, c.finish_reason, c.completion_tokens, c.logprobs) for c in out[1]] == [("", "prompt_too_long", 0, [])] * 2
    assert out[1][0].prompt_tokens > smol_engine.n_ctx_seq
    assert [c.text for c in out[0]] == [c.text for c in smol_engine.generate([REQS[0]], s, n=2)[0]]
    cached.calls_made = 0
    cached.generate([REQS[0], long], s, n=2)
    assert cached.calls_made == 1  # the short request came from the cache, the long one was asked again


def test_completion_cut_by_the_context_finishes_context(smol_engine):
    words = 1000
    while len(smol_engine.tokenize_prompt(ChatRequest.user("Tell a very long story. " + "word " * words))) > smol_engine.n_ctx_seq - 4:
        words -= 1
    prompt = ChatRequest.user("Tell a very long story. " + "word " * words)
    left = smol_engine.n_ctx_seq - len(smol_engine.tokenize_prompt(prompt))
    c = smol_engine.generate([prompt], Sampling(max_tokens=500, temperature=0), n=1)[0][0]
    assert (c.completion_tokens, c.finish_reason) == (left, "context")
    short = smol_engine.generate([REQS[0]], Sampling(max_tokens=3, temperature=0), n=1)[0][0]
    assert (short.completion_tokens, short.finish_reason) == (3, "length")


def test_timeout_bounds_a_call(smol_path):
    from catrl.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine("smollm2-135m", max_seqs=4, n_ctx_seq=1024, timeout_s=0.5)
    with pytest.raises(EngineError, match="timed out"):
        eng.generate(REQS, Sampling(max_tokens=900, temperature=1.0), n=4)
    # the engine is usable afterwards (with room for a loaded machine)
    eng.timeout_s = 120
    assert len(eng.generate(REQS[:1], Sampling(max_tokens=4), n=1)[0]) == 1
    eng.close()


PASSAGE = " ".join(f"Item {i}: the patient reports symptom number {i} on day {i % 7}." for i in range(40))


def test_prompts_sharing_a_long_prefix_reuse_its_kv(smol_engine):
    reqs = [ChatRequest.user(f"{PASSAGE}\n\nQuestion {k}: does the text mention day {k}? Answer yes or no.") for k in range(4)]
    s = Sampling(temperature=0, max_tokens=12, logprobs=True)
    before = smol_engine.prefix_tokens_reused
    shared = smol_engine.generate(reqs, s)
    reused = smol_engine.prefix_tokens_reused - before
    assert reused >= 3 * 300  # requests 2-4 each skip the passage
    alone = [smol_engine.generate([r], s)[0] for r in reqs]
    for (a,), (b,) in zip(shared, alone):
        assert a.prompt_tokens == b.prompt_tokens
        # same first token, nearly the same log-probability: the reused KV was computed in other batches,
        # whose float sums differ by CPU (0.066 nats on an AVX2-only EPYC, under 0.05 with AVX-512)
        assert a.logprobs[0].token == b.logprobs[0].token
        assert abs(a.logprobs[0].logprob - b.logprobs[0].logprob) < 0.1
    assert sum(a.text == b.text for (a,), (b,) in zip(shared, alone)) >= 3


def test_scoring_reuses_a_shared_prefix_and_agrees_with_scoring_alone(smol_engine):
    req = ChatRequest.user(f"{PASSAGE}\n\nSummarize the text in one sentence.")
    conts = ["The text lists forty symptoms over a week.", "It is a list of symptoms reported by a patient on several days."]
    before = smol_engine.prefix_tokens_reused
    together = smol_engine.score([req, req], conts)
    assert smol_engine.prefix_tokens_reused - before >= 300
    alone = [smol_engine.score([req], [c])[0] for c in conts]
    for a, b in zip(together, alone):
        assert [t.token for t in a.tokens] == [t.token for t in b.tokens]
        assert abs(a.mean_nll - b.mean_nll) < 0.05


def test_q8_kv_cache_decodes_and_is_its_own_identity(smol_path, smol_engine):
    from catrl.engines.llamacpp import LlamaCppEngine

    with pytest.raises(InputError, match="kv_type"):
        LlamaCppEngine("smollm2-135m", kv_type="q4_0")
    eng = LlamaCppEngine("smollm2-135m", max_seqs=4, n_ctx_seq=1024, kv_type="q8_0")
    (out,) = eng.generate(REQS[:1], Sampling(max_tokens=12, temperature=0), n=1)
    assert out[0].completion_tokens > 0 and out[0].text.strip()
    # quantized KV changes the numbers, so a call cache must never mix its answers with f16's
    assert eng.identity == smol_engine.identity + ":kv-q8_0"
    eng.close()


def test_flash_attention_off_generates_under_its_own_identity(smol_engine):
    """Flash attention off (faster after long anchor prompts) changes the numbers: its calls never share
    cache entries with the default engine's, and it still generates normally."""
    from catrl.engines.factory import EngineOptions, open_engine

    eng = open_engine(EngineOptions(model="smollm2-135m", max_seqs=2, n_ctx_seq=512, flash_attn=False, use_cache=False))
    try:
        assert eng.identity == smol_engine.identity + ":nofa"
        (out,) = eng.generate(REQS[:1], Sampling(temperature=0.0, max_tokens=16), n=1)
        assert out[0].completion_tokens > 0 and out[0].text.strip()
    finally:
        eng.close()
