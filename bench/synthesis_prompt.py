"""Synthesis prompts compared on a small anchor: does the reference end with an answer, and does it give GRPO a signal?

The CaT-RL anchor (Qwen2.5-Coder-0.5B, frozen, on llama.cpp) reads G=8 rollouts of the same model
(T 0.7, top-p 0.8, top-k 20, max 320 new tokens: CaT-RL's settings) on GSM8K test questions from
--offset (1000 by default: outside CaT-RL's training 0-199 and held-out 200-399 questions), and
synthesizes one reference per group with each prompt file, at each anchor token budget. Per
setting: references with an extractable answer, references right against the gold answer (for
monitoring; gold never reaches a prompt), groups whose CaT rewards are not all equal (the groups
GRPO learns from), mean reference length. Every model call goes through the call cache.
Ends with `synthesis_prompt: <name>=<answer rate> ...` at the largest budget.

    python bench/synthesis_prompt.py [--limit 24] [--prompt bench/prompts/synthesis_reasoning_v1.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from catrl import prompting
from catrl.cache import CallCache
from catrl.datasets import gold_answer, load_examples
from catrl.delimit import format_candidates
from catrl.engines.base import CachedEngine
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.paths import default_call_cache
from catrl.rollouts import build_request
from catrl.types import ChatRequest, Sampling
from catrl.verify import equivalent, extract_answer

ROLLOUT = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=320, seed=0)


def anchor_requests(template: str, groups: list[list[str]]) -> list[ChatRequest]:
    """The anchor's requests from a prompt text, filled as synthesis.synthesis_request fills the packaged one."""
    return [ChatRequest.user(prompting.fill(template, count=str(len(g)), candidates=format_candidates(g)), id=str(i))
            for i, g in enumerate(groups)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--offset", type=int, default=1000)
    ap.add_argument("--prompt", type=Path, action="append", default=None,
                    help="extra prompt files to compare with the packaged one (default: the previous one, v1)")
    ap.add_argument("--max-tokens", default="640,1024")
    args = ap.parse_args()
    files = args.prompt or [Path(__file__).parent / "prompts" / "synthesis_reasoning_v1.txt"]
    prompts = {f.stem: f.read_text(encoding="utf-8") for f in files}
    prompts["packaged"] = prompting.load("synthesis_reasoning")
    budgets = [int(x) for x in args.max_tokens.split(",")]

    examples = load_examples("gsm8k", limit=args.offset + args.limit)[args.offset :]
    gold = [gold_answer("gsm8k", e.gold) for e in examples]
    engine = CachedEngine(LlamaCppEngine(args.model, max_seqs=32, n_ctx_seq=4096), CallCache(default_call_cache()))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; anchor and policy {args.model} (llama.cpp); "
          f"GSM8K test {args.offset}-{args.offset + args.limit - 1}, G=8, rollouts max {ROLLOUT.max_tokens} tokens")
    groups = engine.generate([build_request(e, "solve") for e in examples], ROLLOUT, n=8)
    texts = [[c.text for c in g] for g in groups]
    answers = [[extract_answer(t) for t in g] for g in texts]
    n = len(examples)
    print(f"rollouts with an extractable answer: {sum(a is not None for g in answers for a in g)}/{8 * n}")
    print(f"{'prompt':28s} {'max tok':>7s} {'ref answer':>10s} {'ref right':>9s} {'signal groups':>13s} {'mean tok':>8s} {'seconds':>7s}")
    last = {}
    for name, template in prompts.items():
        for budget in budgets:
            t0 = time.time()
            outs = engine.generate(anchor_requests(template, texts), Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=budget, seed=0), n=1)
            seconds = time.time() - t0
            refs = [extract_answer(o[0].text) for o in outs]
            has = sum(r is not None for r in refs)
            right = sum(r is not None and g is not None and equivalent(g, r).equal for r, g in zip(refs, gold, strict=True))
            signal = sum(
                r is not None and 0 < sum(a is not None and equivalent(r, a).equal for a in g) < len(g)
                for r, g in zip(refs, answers, strict=True)
            )
            mean_tok = sum(o[0].completion_tokens for o in outs) / n
            print(f"{name:28s} {budget:7d} {has:6d}/{n:<3d} {right:5d}/{n:<3d} {signal:9d}/{n:<3d} {mean_tok:8.0f} {seconds:7.0f}", flush=True)
            last[name] = has / n
    print("(seconds are 0 for settings answered from the call cache)")
    print("synthesis_prompt: " + " ".join(f"{k}={v:.3f}" for k, v in last.items()))


if __name__ == "__main__":
    main()
