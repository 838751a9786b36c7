"""Which reward tracks the physician rubric? Rank correlation of each candidate reward with the
HealthBench physician-rubric score, across the rollouts of the shared conversations.

The 20 HealthBench "hard" conversations x G=4 rollouts of the embedded 1.5B model (the same
rollouts as bench/judge_cost.py, through the call cache). Every rollout is graded with its
physician rubric (HealthBench's per-item grading, the same 1.5B model as grader) and scored by
each candidate reward: `self_rubric` (CaT: rubric written by the anchor from its synthesized
reference, judged per criterion as in the paper), `question_rubric` (rubric written from the
conversation, the paper's ablation, same judging) and `judge_equiv` (a model-as-judge "is it
equivalent to the reference?"); the self-proposed rubric is also judged batched
(`self_rubric_batched`: all criteria of a response in one call), which shows what batching costs
in validity and how often the two modes agree. Spearman is
pooled over rollouts; its 95% CI resamples whole conversations. Writes docs/rubric_validity/ and
ends with `rubric_validity: self_rubric=<rho> judge_equiv=<rho>`.

    python bench/rubric_validity.py [--limit 20] [--g 4] [--max-tokens 512]
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict
from pathlib import Path

from catrl.cache import CallCache
from catrl.datasets import load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.evaluate_freeform import FreeformConfig, run_freeform_eval, summarize_freeform, write_freeform
from catrl.paths import default_call_cache
from catrl.report.html_freeform import write_freeform_html
from catrl.types import Sampling


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dataset", default="healthbench_hard20")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("docs/rubric_validity"))
    args = ap.parse_args()

    engine = CachedEngine(LlamaCppEngine(args.model, max_seqs=32, n_ctx_seq=4096), CallCache(default_call_cache()))
    cfg = FreeformConfig(
        dataset=args.dataset, limit=args.limit, g=args.g, methods=("single", "min_ppl", "cat"), validity=True,
        judge_mode="per_criterion", validity_extra_modes=("batched",),
        sampling=Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=args.max_tokens, seed=0, logprobs=True),
        anchor_sampling=Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0),
    )
    results = run_freeform_eval(engine, engine, engine, cfg, judge=engine,
                                progress=lambda s, d, t: print(f"  {s}: {d}/{t}", flush=True) if d in (0, t) else None)
    summary = summarize_freeform(results)
    write_freeform(results, summary, args.out)
    crit = {e.id: [asdict(c) for c in e.criteria] for e in load_examples(args.dataset, limit=args.limit)}
    write_freeform_html([asdict(r) for r in results], summary, crit, args.out / "report.html", "Reward validity on HealthBench hard (20)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.model} as policy, anchor, judge and grader; "
          f"{len(results)} conversations x G={args.g}")
    print(f"{'reward':<26}{'Spearman':>9}{'95% CI':>20}{'rollouts':>9}")
    for name, v in summary["validity"].items():
        print(f"{name:<26}{v['rho']:>9.3f}{'[' + format(v['lo'], '.3f') + ', ' + format(v['hi'], '.3f') + ']':>20}{v['n_pairs']:>9}")
    print(f"{'method':<18}{'physician score':>16}{'std':>8}")
    for m, s in summary["methods"].items():
        print(f"{m:<18}{s['score']:>16.3f}{s['bootstrap_std']:>8.3f}")
    for name, a in summary["mode_agreement"].items():
        print(f"verdict agreement, self-proposed rubric, {cfg.judge_mode} vs {name.removeprefix('self_rubric_')}: "
              f"{a['agreement']:.3f} over {a['pairs']} (rollout, criterion) pairs")
    v = summary["validity"]
    print(f"rubric_validity: self_rubric={v['self_rubric']['rho']:.3f} judge_equiv={v['judge_equiv']['rho']:.3f}")


if __name__ == "__main__":
    main()
