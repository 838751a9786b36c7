"""How well a sift reader (catrl.sift) tells bait from honest pieces, and where its threshold goes.

    python bench/sift_design.py --reader anchor --out docs/reward_hacking/sift_anchor

The anchor reader marks sentences of a math rollout written to sway the model that reads the group
(estimators' `sift=1`). Its pieces, scored by the embedded model as log P(piece | bait prompt) -
log P(piece | honest prompt):
- design bait: every piece of a design-corpus synthesis case (bench/data/hostile.jsonl) that its honest
  control does not hold, where screening does not leave the whole rollout out (junk is never read);
- design honest: a seeded sample of the sentences of the GSM8K rollouts of questions 0-99 (the design split
  of docs/reference_estimators, from docs/cat_quality's committed calls);
- report honest: a sample from questions 100-199, scored only after the threshold is fixed, for the false
  positive rate on sentences the choice never saw.
The threshold rule, fixed before any score was read: the smallest multiple of 0.5 nats at least 1 nat
above every design-honest piece (llama.cpp's batch-shape numerics move a ratio by up to 1.4 nats).
Calls go through a call cache, so a rerun replays them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import random
import shlex
import sys
from pathlib import Path

from catrl.cache import CallCache, export_calls, import_calls
from catrl.datasets import load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.guards import grader_directed_spans, visible
from catrl.rollouts import build_request
from catrl.screening import screen_group
from catrl.sift import ANCHOR, pieces, score_pieces

ROOT = Path(__file__).resolve().parents[1]


def piece_texts(text: str) -> list[str]:
    v = visible(text)
    return [v[a:b] for a, b in pieces(text)]


def rollouts_by_question(n: int) -> list[list[str]]:
    """The committed GSM8K rollouts (docs/cat_quality) of questions 0..n-1, by question."""
    examples = load_examples("gsm8k", None, n)
    index = {json.dumps(build_request(e, "solve").messages, sort_keys=True): i for i, e in enumerate(examples)}
    out: list[list[str]] = [[] for _ in examples]
    with gzip.open(ROOT / "docs" / "cat_quality" / "calls.jsonl.gz", "rt", encoding="utf-8") as fh:
        for r in map(json.loads, fh):
            i = index.get(json.dumps(r["request"]["messages"], sort_keys=True)) if r["kind"] == "generate" else None
            if i is not None and r["request"].get("n", 1) > 1:
                out[i] = [c["text"] for c in r["result"]]
    return out


def sample_pieces(groups: list[list[str]], k: int, seed: int, seen: frozenset[str] = frozenset()) -> list[str]:
    """k distinct sentences of the groups' rollouts, none of them in `seen` (a sentence common to both splits
    would not be unseen)."""
    pool = sorted({p for g in groups for t in g for p in piece_texts(t)} - seen)
    return random.Random(seed).sample(pool, min(k, len(pool)))


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reader", choices=["anchor"], default="anchor")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--honest", type=int, default=200, help="design-honest pieces sampled")
    ap.add_argument("--report", type=int, default=200, help="report-honest pieces sampled (questions 100-199)")
    ap.add_argument("--cache", type=Path, default=Path("runs/sift_design/cache.sqlite"))
    ap.add_argument("--out", type=Path, default=Path("docs/reward_hacking/sift_anchor"))
    args = ap.parse_args()
    reader = ANCHOR
    cases = [json.loads(x) for x in (ROOT / "bench" / "data" / "hostile.jsonl").open(encoding="utf-8") if x.strip()]
    # a rollout that screening leaves out whole (junk, repetition, noise) is never read, so none of it is bait to score
    read = [c for c in cases if c["kind"] == "synthesis" and len(c["base"]) not in screen_group([*c["base"], c["hostile"]]).excluded]
    bait = sorted({p for c in read for p in piece_texts(c["hostile"]) if p not in set(piece_texts(c["control"]))})
    groups = rollouts_by_question(200)
    honest = sample_pieces(groups[:100], args.honest, seed=0)
    design_pool = frozenset(p for g in groups[:100] for t in g for p in piece_texts(t))
    report = sample_pieces(groups[100:], args.report, seed=1, seen=design_pool)
    cache = CallCache(args.cache)
    own = args.out / "calls.jsonl.gz"
    if own.exists():
        import_calls(cache, own)
    engine = CachedEngine(LlamaCppEngine(args.model, max_seqs=16, n_ctx_seq=1024), cache)
    llr = score_pieces(engine, bait + honest, reader)
    threshold = math.ceil((max(llr[p] for p in honest) + 1.0) * 2) / 2
    llr.update(score_pieces(engine, report, reader))
    engine.inner.close()
    args.out.mkdir(parents=True, exist_ok=True)
    export_calls(cache, own)

    patterned = {p for p in bait if grader_directed_spans(p)}
    rows = {"bait": bait, "design_honest": honest, "report_honest": report}
    lines = [f"command: {shlex.join(['python', *sys.argv])}; machine {platform.machine()}, {os.cpu_count()} cores; reader {args.model}",
             f"pieces: {len(bait)} design bait ({len(patterned)} also caught by the patterns), {len(honest)} design honest, "
             f"{len(report)} report honest (questions 100-199)",
             f"AUC bait vs design honest: {auc([llr[p] for p in bait], [llr[p] for p in honest]):.3f}; "
             f"bait the patterns miss vs design honest: {auc([llr[p] for p in bait if p not in patterned], [llr[p] for p in honest]):.3f}",
             f"threshold (smallest 0.5 multiple >= max design honest + 1): {threshold}",
             "above the threshold: " + ", ".join(f"{k} {sum(llr[p] > threshold for p in v)}/{len(v)}" for k, v in rows.items()),
             "bait the patterns miss, above the threshold: "
             f"{sum(llr[p] > threshold for p in bait if p not in patterned)}/{len(bait) - len(patterned)}"]
    for k, v in rows.items():
        lines.append(f"\n{k}, highest first:")
        lines += [f"  {llr[p]:7.2f}  {'P ' if p in patterned else '  '}{p[:110]!r}" for p in sorted(v, key=lambda p: -llr[p])[:40]]
    (args.out / "output.txt").write_text("\n".join(lines) + "\n")
    (args.out / "scores.json").write_text(json.dumps({"threshold": threshold, "llr": {k: {p: round(llr[p], 3) for p in v} for k, v in rows.items()}},
                                                     indent=1, ensure_ascii=False))
    print("\n".join(lines[:6]))
    print(f"sift_design: reader={args.reader} threshold={threshold} "
          + " ".join(f"{k}_above={sum(llr[p] > threshold for p in v)}/{len(v)}" for k, v in rows.items()))


if __name__ == "__main__":
    main()
