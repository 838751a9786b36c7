"""Batched versus per-criterion judging of self-proposed rubrics: cost and verdict agreement.

The 20 shared HealthBench "hard" conversations x G=4 rollouts of the embedded 1.5B model (T 0.7,
top-p 0.8, top-k 20, max `--max-tokens`); the anchor (same frozen model) synthesizes a reference
from each group and writes a rubric from it. Rollouts, references and rubrics go through the call
cache (a rerun resumes); the two judging passes run uncached and timed in one process, on the same
engine: `per_criterion` (the paper's: one call per rollout and criterion; prompts that share the
conversation and response reuse its KV) and `batched` (all criteria of a rollout in one call; a
criterion it leaves unanswered is asked alone). Agreement counts (rollout, criterion) pairs where
both gave the same parsed verdict. Ends with `judge_cost: ratio=<per-criterion s / batched s> agreement=<share>`.

    python bench/judge_cost.py [--limit 20] [--g 4] [--max-tokens 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from catrl.cache import CallCache
from catrl.datasets import load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.judging import judge_many
from catrl.paths import default_call_cache
from catrl.rollouts import build_request
from catrl.rubrics import propose_rubrics
from catrl.synthesis import synthesize_many
from catrl.types import Sampling


class Counting:
    """Passes calls through and adds up prompt and completion tokens."""

    def __init__(self, engine):
        self.engine, self.identity = engine, engine.identity
        self.prompt_tokens = self.completion_tokens = self.calls = 0

    def generate(self, requests, sampling, n=1, on_result=None):
        out = self.engine.generate(requests, sampling, n=n, on_result=on_result)
        self.calls += len(requests)
        self.prompt_tokens += sum(g[0].prompt_tokens for g in out)
        self.completion_tokens += sum(c.completion_tokens for g in out for c in g)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dataset", default="healthbench_hard20")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--max-seqs", type=int, default=32)
    args = ap.parse_args()

    engine = LlamaCppEngine(args.model, max_seqs=args.max_seqs, n_ctx_seq=4096)
    cached = CachedEngine(engine, CallCache(default_call_cache()))
    exs = load_examples(args.dataset, limit=args.limit)
    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens, seed=0)
    groups = cached.generate([build_request(e, "raw") for e in exs], sampling, n=args.g)
    texts = [[c.text for c in g] for g in groups]
    refs = synthesize_many(cached, texts, "freeform", Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0))
    rubrics = propose_rubrics(cached, [r.text for r in refs], sampling=Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0))
    items = [(e.messages, t, rub) for e, g, rub in zip(exs, texts, rubrics) for t in g]

    results = {}
    for mode in ("per_criterion", "batched"):
        counter = Counting(engine)
        reused0 = engine.prefix_tokens_reused
        t0 = time.perf_counter()
        verdicts = judge_many(counter, items, mode)
        results[mode] = (time.perf_counter() - t0, counter, engine.prefix_tokens_reused - reused0, verdicts)

    pc, bt = results["per_criterion"][3], results["batched"][3]
    pairs = [(a, b) for va, vb in zip(pc, bt) for a, b in zip(va, vb)]
    both = [(a, b) for a, b in pairs if a.met is not None and b.met is not None]
    agree = sum(a.met == b.met for a, b in both) / len(pairs) if pairs else float("nan")
    fallback = sum(b.flag == "per_criterion_fallback" for _, b in pairs)
    n_crit = [len(r.criteria) for r in rubrics]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.model} (policy, anchor, judge); "
          f"{len(exs)} conversations x G={args.g}; rubrics of {min(n_crit)}-{max(n_crit)} criteria "
          f"({sum(n_crit)} total, flags: {sorted({f for r in rubrics for f in r.flags}) or 'none'})")
    print(f"{'mode':<15}{'calls':>7}{'prompt tok':>12}{'reused':>9}{'computed':>10}{'compl tok':>10}{'seconds':>9}{'unparsed':>9}")
    for mode, (sec, c, reused, vs) in results.items():
        unparsed = sum(v.met is None for row in vs for v in row)
        print(f"{mode:<15}{c.calls:>7}{c.prompt_tokens:>12}{reused:>9}{c.prompt_tokens - reused:>10}{c.completion_tokens:>10}{sec:>9.1f}{unparsed:>9}")
    print(f"(rollout, criterion) pairs {len(pairs)}; both parsed {len(both)}; batched fell back per criterion on {fallback}")
    ratio = results["per_criterion"][0] / results["batched"][0]
    tok_ratio = (results["per_criterion"][1].prompt_tokens + results["per_criterion"][1].completion_tokens) / max(
        1, results["batched"][1].prompt_tokens + results["batched"][1].completion_tokens)
    print(f"token ratio (prompt + completion, per-criterion / batched): {tok_ratio:.2f}")
    print(f"judge_cost: ratio={ratio:.2f} agreement={agree:.3f}")


if __name__ == "__main__":
    main()
