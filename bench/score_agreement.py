"""score() against generate()'s own logprobs on the same tokens.

Samples G completions with logprobs for a few GSM8K questions, then teacher-forces the sampled
text through score() and compares the logprob of every token where the two tokenizations agree.
Ends with `score_agreement: max_abs_diff=<x> mean_abs_diff=<y> tokens=<n>`. Scoring prefills the
continuation in one batch while sampling decodes token by token, and llama.cpp's attention kernels
differ between the two, so the match is close rather than exact.

    python bench/score_agreement.py [--model qwen2.5-coder-1.5b] [--questions 4] [--g 4]
"""

from __future__ import annotations

import argparse

from catrl import prompting
from catrl.datasets import load_examples
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.types import ChatRequest, Sampling


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()

    engine = LlamaCppEngine(args.model, max_seqs=args.questions * args.g, n_ctx_seq=1024)
    exs = load_examples("gsm8k", limit=args.questions)
    reqs = [ChatRequest.user(prompting.render("solve", question=e.question), id=e.id) for e in exs]
    out = engine.generate(reqs, Sampling(max_tokens=args.max_tokens, seed=7, logprobs=True), n=args.g)
    print(f"{'question':<10}{'sample':>7}{'tokens':>8}{'compared':>10}{'max |diff|':>12}")
    worst, total, mismatched, abs_sum = 0.0, 0, 0, 0.0
    for req, group in zip(reqs, out):
        scored = engine.score([req] * len(group), [c.text for c in group])
        for j, (c, s) in enumerate(zip(group, scored)):
            both = list(zip(c.logprobs, s.tokens))
            cut = next((k for k, (a, b) in enumerate(both) if a.token != b.token), len(both))
            pairs = [(a.logprob, b.logprob) for a, b in both[:cut]]  # compare while both tokenizations agree
            mismatched += int(len(pairs) != len(c.logprobs) or len(s.tokens) != len(c.logprobs))
            d = max((abs(a - b) for a, b in pairs), default=0.0)
            worst, total = max(worst, d), total + len(pairs)
            abs_sum += sum(abs(a - b) for a, b in pairs)
            print(f"{req.id:<10}{j:>7}{len(c.logprobs):>8}{len(pairs):>10}{d:>12.2e}")
    print(f"samples whose re-tokenization differs from the sampled tokens: {mismatched}")
    print(f"score_agreement: max_abs_diff={worst:.3f} mean_abs_diff={abs_sum / max(1, total):.4f} tokens={total}")


if __name__ == "__main__":
    main()
