"""What returning logprobs costs a batched decode (min-PPL needs them on every rollout).

8 GSM8K questions x G=8 samples (64 sequences decoding together), max --max-tokens new tokens, the
paper's Qwen sampling, in one process on one engine, three ways with the same seeds: logprobs off;
logprobs on, each step's softmax denominators in one numpy pass over all output rows (the engine's
way); logprobs on, one float64 log-softmax per token (the engine's way before 2026-11-29). Ends with
`logprob_cost: batched_over_off=<x> per_token_over_off=<y>` (wall-time ratios; 1.00 = free).

    python bench/logprob_cost.py [--model qwen2.5-coder-1.5b] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import numpy as np

from catrl.datasets import load_examples
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.rollouts import build_request
from catrl.types import Sampling


def per_token(engine: LlamaCppEngine):
    """The earlier implementation: every output row's log-sum-exp alone, in float64."""

    def lse(n_out: int, block: int = 64) -> np.ndarray:
        rows = [engine._logits(j - n_out).astype(np.float64) for j in range(n_out)]
        return np.array([r.max() + np.log(np.exp(r - r.max()).sum()) for r in rows])

    return lse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    engine = LlamaCppEngine(args.model, max_seqs=args.questions * args.g, n_ctx_seq=1024)
    reqs = [build_request(e, "solve") for e in load_examples("gsm8k", limit=args.questions)]
    base = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens, seed=0)
    engine.generate(reqs[:1], base, n=1)  # warm-up: weights paged in
    rows, times = [], {}
    for name, logprobs, patch in (("off", False, None), ("batched", True, None), ("per_token", True, per_token(engine))):
        if patch:
            engine._output_logsumexp = patch
        t0 = time.perf_counter()
        out = engine.generate(reqs, replace(base, logprobs=logprobs), n=args.g)
        times[name] = time.perf_counter() - t0
        tokens = sum(c.completion_tokens for g in out for c in g)
        rows.append((name, tokens, times[name]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.model}; {args.questions * args.g} sequences, max {args.max_tokens} tokens")
    print(f"{'logprobs':<10} {'tokens':>7} {'seconds':>8} {'tok/s':>7}")
    for name, tokens, dt in rows:
        print(f"{name:<10} {tokens:>7} {dt:>8.1f} {tokens / dt:>7.1f}")
    print(f"logprob_cost: batched_over_off={times['batched'] / times['off']:.2f} per_token_over_off={times['per_token'] / times['off']:.2f}")


if __name__ == "__main__":
    main()
