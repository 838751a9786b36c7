"""The KV cache's element type and the attention kernel, at the anchor's context length.

Variants are `KV[:fa|:nofa]`: the KV element type (f16, q8_0) and llama.cpp's flash attention on or
off (default: llama.cpp's choice, on for CPU). One anchor prompt (the synthesis prompt over the first
GSM8K question's G=8 rollouts, ~2,600 tokens, the rollouts from the call cache when present) is
prefilled, then fanned out to 32 samples that decode 96 tokens each. Per round and variant: the
prompt rate and the decode rate of steps with at least 16 sequences live. Variants alternate within
a round, in one process, so the machine's noise hits all alike.

    python bench/kv_cache.py [--rounds 2] [--variants f16,q8_0]
    python bench/kv_cache.py --variants f16:fa,f16:nofa
"""

from __future__ import annotations

import argparse
import time

from catrl.cache import CallCache
from catrl.datasets import load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.paths import default_call_cache
from catrl.rollouts import build_request
from catrl.synthesis import synthesis_request
from catrl.types import Sampling


def parse_variant(text: str) -> tuple[str, str, bool | None]:
    """"f16:nofa" -> (name, KV type, flash attention on/off/None for llama.cpp's choice)."""
    kv, _, attn = text.partition(":")
    if attn not in ("", "fa", "nofa"):
        raise SystemExit(f"--variants: {text!r}: the attention part must be fa or nofa")
    return text, kv, {"": None, "fa": True, "nofa": False}[attn]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="f16,q8_0", help="comma-separated KV[:fa|:nofa]")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants.split(",")]
    ex = load_examples("gsm8k", limit=1)[0]
    policy = CachedEngine(LlamaCppEngine(args.model, max_seqs=8), CallCache(default_call_cache()))
    rolls = policy.generate([build_request(ex, "solve")], Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=512, seed=0), n=8)[0]
    policy.inner.close()
    req = synthesis_request([c.text for c in rolls], "reasoning", id=ex.id)
    for rnd in range(args.rounds):
        for name, kv, fa in variants:
            eng = LlamaCppEngine(args.model, max_seqs=32, kv_type=kv, flash_attn=fa)
            eng.generate([req], Sampling(max_tokens=1))  # page the weights in
            log0 = len(eng.decode_log)
            t0 = time.perf_counter()
            out = eng.generate([req], Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=96, seed=2), n=32)
            total = time.perf_counter() - t0
            rows = eng.decode_log[log0:]
            pre_s, pre_t = sum(r[2] for r in rows if r[0] == "prefill"), sum(r[1] for r in rows if r[0] == "prefill")
            full = [r for r in rows if r[0] == "decode" and r[1] >= 16]
            dec_t, dec_s = sum(r[1] for r in full), sum(r[2] for r in full)
            print(f"round {rnd} kv={name}: prompt {out[0][0].prompt_tokens} tok prefill {pre_t / pre_s:.1f} tok/s; "
                  f"decode>=16 seqs {dec_t / dec_s:.1f} tok/s ({dec_t} tok); total {total:.1f}s", flush=True)
            eng.close()


if __name__ == "__main__":
    main()
