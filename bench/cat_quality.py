"""Test-time CaT versus the paper's baselines on GSM8K with the embedded default model.

Qwen2.5-Coder-1.5B as policy and (frozen) anchor, G=8, temperature 0.7, top-p 0.8, top-k 20 (the
paper's Qwen settings), max 512 new tokens, the first 200 GSM8K test questions. single, majority,
min-PPL and CaT on all of them; self-selected best-of-N and USC on the first 100; mutual
predictability on the first 50; accuracy vs G on the first --sweep-limit questions. Every model
call is cached: rerun the same command to resume after a kill. Writes results, summary, plot and the
HTML audit page to --out and ends with
`cat_quality: n=<questions> single=<acc> majority=<acc> cat=<acc> cat_minus_majority=<d>`.

The run's calls travel with its report: OUT/calls.jsonl.gz (an export of the call cache, written at
the end, logprobs rounded to 4 decimals to keep it small) is imported at the start, so the same command on another machine replays every finished
call instead of recomputing hours of rollouts.

    python bench/cat_quality.py [--limit 200] [--sweep-limit 200] [--out docs/cat_quality]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from catrl import prompting
from catrl.cache import CallCache, export_calls, import_calls
from catrl.engines.base import CachedEngine
from catrl.engines.factory import group_context
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.evaluate import EvalConfig, run_eval, summarize, write_results
from catrl.paths import default_call_cache
from catrl.report.html import write_html
from catrl.report.plots import plot_sweep
from catrl.report.table import analyses_table, method_table, paired_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--bon-limit", type=int, default=100)
    ap.add_argument("--mutual-limit", type=int, default=50)
    ap.add_argument("--sweep-limit", type=int, default=200, help="0: no accuracy-vs-G sweep")
    ap.add_argument("--methods", default="single,majority,min_ppl,self_bon,usc,mutual,cat")
    ap.add_argument("--out", type=Path, default=Path("docs/cat_quality"))
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--prompts", type=Path, default=None, help="a directory of <name>.txt files replacing packaged prompts (catrl --prompts)")
    ap.add_argument("--calls", type=Path, default=None, help="call export to resume from and to write at the end (default OUT/calls.jsonl.gz)")
    args = ap.parse_args()
    prompting.use_dir(args.prompts)

    cfg = EvalConfig(
        dataset="gsm8k", limit=args.limit, g=8,
        methods=tuple(args.methods.split(",")),
        method_limits={"self_bon": args.bon_limit, "usc": args.bon_limit, "mutual": args.mutual_limit},
        g_sweep=(1, 2, 4, 8) if args.sweep_limit else (), sweep_limit=args.sweep_limit,
        estimator="synthesis",  # this bench measures the paper's CaT (the eval's default estimator is another)
    )
    # Two engines on the same weights. The rollouts: llama.cpp's default kernels, sequences of 1,024
    # tokens (a GSM8K prompt plus 512). Everything that reads a whole group (the anchor; the policy's
    # own self-BoN, USC and mutual predictability): room for 8 rollouts of 512 tokens plus a 1,024-token
    # answer (6,400 tokens), flash attention off, which decoded 1.43x faster after such prompts
    # (docs/bench/kv_cache_attention.txt). Both are cached under their own identities.
    cache = CallCache(args.cache or default_call_cache())
    console = Console(stderr=True)
    calls = args.calls or args.out / "calls.jsonl.gz"
    if calls.exists():
        added, held = import_calls(cache, calls)
        console.print(f"{calls}: imported {added:,} calls ({held:,} already held)")
    policy = CachedEngine(LlamaCppEngine(args.model, max_seqs=64, n_ctx_seq=1024), cache)
    ctx = group_context(cfg.g, cfg.sampling.max_tokens, cfg.anchor_sampling.max_tokens)
    reader = CachedEngine(LlamaCppEngine(args.model, max_seqs=64, n_ctx_seq=ctx, flash_attn=False), cache)
    t0 = time.time()
    last = {}

    def tick(stage, done, total):
        if done == total or done - last.get(stage, -100) >= max(1, total // 20):
            last[stage] = done
            console.print(f"[{time.time() - t0:7.0f}s] {stage}: {done}/{total}")

    results = run_eval(policy, reader, cfg, progress=tick, selector=reader)
    summary = summarize(results)
    summary["config"] = {"command": shlex.join(["python", *sys.argv]), "model": args.model, "limit": args.limit, "g": cfg.g, "sampling": cfg.sampling.to_dict(),
                         "anchor_sampling": cfg.anchor_sampling.to_dict(), "method_limits": cfg.method_limits,
                         "sweep_limit": args.sweep_limit, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                         "rollout_engine": policy.identity, "anchor_and_selector_engine": reader.identity,
                         "prompts": prompting.provenance()}
    write_results(results, summary, args.out)
    # the reader's identity is the policy's plus ":nofa" (same weights), so one filter takes both
    console.print(f"{calls}: exported {export_calls(cache, calls, engine_contains=policy.identity, logprob_digits=4):,} calls")
    plot = plot_sweep(summary, args.out / "accuracy_vs_g.png", f"GSM8K, {args.model}")
    write_html([asdict(r) for r in results], summary, args.out / "report.html", f"CaT on GSM8K ({args.model})", plot.name if plot else None)
    out = Console(width=120)
    out.print(f"command: {summary['config']['command']}; machine {summary['config']['machine']}")
    out.print(method_table(summary))
    out.print(paired_table(summary))
    out.print(analyses_table(summary))
    m = summary["methods"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    d = m["cat"]["mean"] - m["majority"]["mean"]
    out.print(f"cat_quality: n={len(results)} single={m['single']['mean']:.3f} majority={m['majority']['mean']:.3f} "
              f"cat={m['cat']['mean']:.3f} cat_minus_majority={d:+.3f}")


if __name__ == "__main__":
    main()
