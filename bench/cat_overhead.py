"""What CaT's synthesis costs next to the rollouts it reads, and next to the engine's own floor.

One embedded engine (Qwen2.5-Coder-1.5B by default, `--max-seqs` sequences decoding together), no
call cache, everything timed in one process:
  1. rollouts: the first `--questions` GSM8K questions x G=8 (T 0.7, top-p 0.8, top-k 20, max 512);
  2. synthesis: one anchor request per question, all sent in one batched call (each prompt prefilled
     once), exactly as `catrl eval` and CaTReward do;
  3. the engine's prompt-processing rate, on (a sample of) those same anchor prompts, one token each;
  4. the engine's batched decode rate, `--max-seqs` sequences of short prompts, 128 tokens each;
  5. the same at the anchor's context: one anchor prompt fanned out to `--max-seqs` samples.
floor = anchor prompt tokens / prompt rate (3) + anchor completion tokens / decode rate at the anchor's
context (5): the engine's own cost for the same tokens. Run 1 used the short-prompt rate (4), which
leaves out that every decode step reads each sequence's ~3k-token KV; that floor is printed too.
The engine's per-decode log splits the synthesis wall time into prompt processing, decode steps with
at least half the slots busy, and the small-batch tail.
Ends with `cat_overhead: ratio=<synthesis/rollouts> floor_ratio=<synthesis/floor> floor_ratio_short_prompt_rate=<...>`.

    python bench/cat_overhead.py [--questions 32] [--max-seqs 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from catrl.datasets import load_examples
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.rollouts import build_request
from catrl.synthesis import synthesis_request
from catrl.types import Completion, Sampling


def timed(engine, requests, sampling, n=1) -> tuple[float, list[list[Completion]]]:
    t0 = time.perf_counter()
    out = engine.generate(requests, sampling, n=n)
    return time.perf_counter() - t0, out


def tokens(groups: list[list[Completion]]) -> tuple[int, int]:
    """(prompt tokens read once per request, completion tokens written)."""
    return sum(g[0].prompt_tokens for g in groups), sum(c.completion_tokens for g in groups for c in g)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--anchor-max-tokens", type=int, default=1024)
    ap.add_argument("--max-seqs", type=int, default=32)
    ap.add_argument("--prefill-sample", type=int, default=8, help="anchor prompts used to measure the prompt rate")
    args = ap.parse_args()

    engine = LlamaCppEngine(args.model, max_seqs=args.max_seqs, n_ctx_seq=4096)
    exs = load_examples("gsm8k", limit=args.questions)
    roll_reqs = [build_request(e, "solve") for e in exs]
    policy = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens, seed=0)
    anchor = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.anchor_max_tokens, seed=0)
    timed(engine, roll_reqs[:1], Sampling(max_tokens=4))  # page the weights in

    t_roll, rolls = timed(engine, roll_reqs, policy, n=args.g)
    syn_reqs = [synthesis_request([c.text for c in g], "reasoning", id=e.id) for g, e in zip(rolls, exs)]
    log0 = len(engine.decode_log)
    t_syn, syns = timed(engine, syn_reqs, anchor)
    syn_log = engine.decode_log[log0:]

    k = min(args.prefill_sample, len(syn_reqs))
    t_pre, pre = timed(engine, syn_reqs[:k], Sampling(max_tokens=1, seed=0))
    prompt_rate = tokens(pre)[0] / t_pre
    per_q = max(1, args.max_seqs // args.g)
    t_dec, dec = timed(engine, roll_reqs[:per_q], Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=128, seed=1),
                       n=args.max_seqs // per_q)
    dec_prompt, dec_tokens = tokens(dec)
    decode_rate = dec_tokens / max(1e-9, t_dec - dec_prompt / prompt_rate)

    t_long, long = timed(engine, syn_reqs[:1], Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=128, seed=2), n=args.max_seqs)
    long_prompt, long_tokens = tokens(long)
    long_rate = long_tokens / max(1e-9, t_long - long_prompt / prompt_rate)

    r_prompt, r_comp = tokens(rolls)
    s_prompt, s_comp = tokens(syns)
    # the floor for these tokens decodes them at the anchor's context (the KV of a ~3k-token prompt is read at
    # every step); the short-prompt rate gives the floor a synthesis of short prompts would have, for comparison
    floor = s_prompt / prompt_rate + s_comp / long_rate
    floor_short = s_prompt / prompt_rate + s_comp / decode_rate
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.model}; {args.questions} GSM8K questions, "
          f"G={args.g}, engine max_seqs={args.max_seqs}")
    print(f"{'stage':<28}{'prompt tok':>11}{'compl tok':>10}{'seconds':>9}")
    print(f"{'rollouts (G per question)':<28}{r_prompt:>11}{r_comp:>10}{t_roll:>9.1f}")
    print(f"{'synthesis (1 per question)':<28}{s_prompt:>11}{s_comp:>10}{t_syn:>9.1f}")
    print(f"{'floor for synthesis tokens':<28}{s_prompt:>11}{s_comp:>10}{floor:>9.1f}")
    print(f"{'  (at the short-prompt rate)':<28}{s_prompt:>11}{s_comp:>10}{floor_short:>9.1f}")
    print(f"prompt rate {prompt_rate:.1f} tok/s ({k} anchor prompts, {t_pre:.1f}s); batched decode rate {decode_rate:.1f} tok/s "
          f"({len(dec) * len(dec[0])} sequences, {dec_tokens} tokens, {t_dec:.1f}s)")
    half = args.max_seqs / 2
    split = {
        "prompt processing": [r for r in syn_log if r[0] == "prefill"],
        f"decode, >= {half:g} sequences": [r for r in syn_log if r[0] == "decode" and r[1] >= half],
        f"decode, < {half:g} sequences (tail)": [r for r in syn_log if r[0] == "decode" and r[1] < half],
    }
    print(f"decode rate at the anchor's context ({long_prompt}-token prompt, {args.max_seqs} samples): {long_rate:.1f} tok/s")
    print("synthesis wall time by kind of llama_decode:")
    for name, rows in split.items():
        sec, toks = sum(r[2] for r in rows), sum(r[1] for r in rows)
        print(f"  {name:<34}{len(rows):>6} calls{toks:>9} tokens{sec:>9.1f} s{toks / sec if sec else 0:>8.1f} tok/s")
    print(f"  outside llama_decode (sampling, bookkeeping): {t_syn - sum(r[2] for r in syn_log):.1f} s")
    print(f"cat_overhead: ratio={t_syn / t_roll:.2f} floor_ratio={t_syn / floor:.2f} floor_ratio_short_prompt_rate={t_syn / floor_short:.2f}")


if __name__ == "__main__":
    main()
