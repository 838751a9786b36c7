"""What a CaT-RL step's rollouts cost on llama.cpp, and what the LoRA adapter and weight repacking add.

A step of the controls' config (docs/cat_rl/controls/config.yaml) samples one group of G=8 from the
0.5B policy with its LoRA applied on llama.cpp (catrl.integrations.llamacpp_rollouts), up to 320
tokens; that took 30-37 s of a 111 s step (docs/bench/grpo_step.txt, run 6). This bench decodes that
same shape under four settings: with and without a rank-1 adapter (the random arm's committed one by
default, converted as training converts it), and with repacking off (the default) and on. The rounds
alternate the settings so drift in the machine's speed falls on all of them alike. Prints a table of
tok/s per setting and ends with
`rollout_decode: lora_cost=<tok/s without adapter / with> repack_gain=<tok/s with repack / without, adapter on>`.

    python bench/rollout_decode.py [--adapter DIR] [--questions 1] [--g 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from catrl import models, prompting
from catrl.datasets import load_examples
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.lora_gguf import adapter_to_gguf
from catrl.types import ChatRequest, Sampling

ROOT = Path(__file__).resolve().parents[1]


def decode(engine: LlamaCppEngine, requests: list[ChatRequest], sampling: Sampling, g: int) -> tuple[float, int]:
    """Seconds and completion tokens of one batched generate call."""
    t0 = time.perf_counter()
    out = engine.generate(requests, sampling, n=g)
    return time.perf_counter() - t0, sum(c.completion_tokens for group in out for c in group)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--adapter", type=Path, default=ROOT / "docs" / "cat_rl" / "controls" / "random" / "state",
                    help="a PEFT LoRA directory trained on the model's HF form")
    ap.add_argument("--questions", type=int, default=1)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    exs = load_examples("gsm8k", limit=args.questions * args.rounds)
    base = models.resolve(args.model)
    lora = adapter_to_gguf(args.adapter, base, Path(tempfile.mkdtemp()) / "adapter.gguf")
    seqs, ctx = args.questions * args.g, 512 + args.max_tokens
    engines = {repack: LlamaCppEngine(args.model, max_seqs=seqs, n_ctx_seq=ctx, repack=repack) for repack in (False, True)}
    settings = [(repack, adapter) for repack in (False, True) for adapter in (False, True)]
    times: dict[tuple[bool, bool], list[float]] = {s: [] for s in settings}
    tokens: dict[tuple[bool, bool], list[int]] = {s: [] for s in settings}
    for e in engines.values():
        decode(e, [ChatRequest.user("Hi")], Sampling(max_tokens=8), 1)  # page the weights in
    for r in range(args.rounds):
        reqs = [ChatRequest.user(prompting.render("solve", question=e.question), id=e.id)
                for e in exs[r * args.questions:(r + 1) * args.questions]]
        order = settings if r % 2 == 0 else settings[::-1]
        for repack, adapter in order:
            engine = engines[repack]
            engine.set_lora(lora if adapter else None)
            sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens, seed=1000 + r)
            dt, n = decode(engine, reqs, sampling, args.g)
            times[(repack, adapter)].append(dt)
            tokens[(repack, adapter)].append(n)
            print(f"round {r + 1}: repack={repack} adapter={adapter}: {n} tokens in {dt:.1f} s", flush=True)

    rate = {s: sum(tokens[s]) / sum(times[s]) for s in settings}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.model}; adapter {args.adapter}; "
          f"{args.questions} question(s) x G={args.g}, max {args.max_tokens} tokens, {args.rounds} rounds")
    print(f"{'repack':<8}{'adapter':<9}{'tokens':>8}{'median s':>10}{'tok/s':>8}")
    for s in settings:
        print(f"{str(s[0]):<8}{str(s[1]):<9}{sum(tokens[s]):>8}{statistics.median(times[s]):>10.1f}{rate[s]:>8.1f}")
    print(f"rollout_decode: lora_cost={rate[(False, False)] / rate[(False, True)]:.2f} "
          f"repack_gain={rate[(True, True)] / rate[(False, True)]:.2f}")


if __name__ == "__main__":
    main()
