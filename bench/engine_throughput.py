"""Batched vs one-after-another decoding on the embedded engine.

8 GSM8K questions x G=8 samples, max 256 new tokens, temperature 0.7 (top-p 0.8, top-k 20): the
same 64 (question, sample) pairs, with the same per-sample seeds, decoded once as one batch and
once one sequence at a time by the same model in the same process. Prints a table and ends with
`engine_throughput: ratio=<batched tok/s / sequential tok/s>`.

    python bench/engine_throughput.py [--model qwen2.5-coder-1.5b] [--questions 8] [--g 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from catrl import prompting
from catrl.datasets import load_examples
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.types import ChatRequest, Sampling


def run(engine: LlamaCppEngine, requests: list[ChatRequest], sampling: Sampling, g: int):
    t0 = time.perf_counter()
    out = engine.generate(requests, sampling, n=g)
    dt = time.perf_counter() - t0
    return dt, sum(c.completion_tokens for group in out for c in group), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repack", action="store_true", help="llama.cpp weight repacking (faster, batch-dependent numerics)")
    args = ap.parse_args()

    exs = load_examples("gsm8k", limit=args.questions)
    reqs = [ChatRequest.user(prompting.render("solve", question=e.question), id=e.id) for e in exs]
    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens, seed=1234)

    ctx = 1024  # per sequence: prompt (~150 tokens) + completion
    batched = LlamaCppEngine(args.model, max_seqs=args.questions * args.g, n_ctx_seq=ctx, repack=args.repack)
    seq = LlamaCppEngine(args.model, max_seqs=1, n_ctx_seq=ctx, repack=args.repack)
    run(batched, reqs[:1], Sampling(max_tokens=8), 1)  # warm up both (page in the weights)
    run(seq, reqs[:1], Sampling(max_tokens=8), 1)

    bt, btok, bout = run(batched, reqs, sampling, args.g)
    st, stok, sout = run(seq, reqs, sampling, args.g)
    b_rate, s_rate = btok / bt, stok / st
    same = sum(a.text == b.text for ga, gb in zip(bout, sout) for a, b in zip(ga, gb))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.model}; repack {args.repack}")
    print(f"{'mode':<12}{'samples':>8}{'tokens':>8}{'seconds':>9}{'tok/s':>8}")
    print(f"{'batched':<12}{len(reqs) * args.g:>8}{btok:>8}{bt:>9.1f}{b_rate:>8.1f}")
    print(f"{'sequential':<12}{len(reqs) * args.g:>8}{stok:>8}{st:>9.1f}{s_rate:>8.1f}")
    print(f"identical samples batched vs sequential: {same}/{len(reqs) * args.g}")
    print(f"engine_throughput: ratio={b_rate / s_rate:.2f}")


if __name__ == "__main__":
    main()
