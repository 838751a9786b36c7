"""Free-form reference estimators on HealthBench hard 20, graded with the physician rubrics.

The rollouts are docs/rubric_validity's: 20 conversations x G=4 of the embedded 1.5B, committed
with their physician scores. So only each estimator's anchor calls and the grading of its response
are new. Every estimator reads only the rollouts, never the conversation. The same 1.5B model is
anchor and grader, as in rubric_validity, and grades with HealthBench's per-item grader prompt.
The first rollout's committed score came from that grader, so `--model` other than the default
makes the comparison with it meaningless (useful only as a quick smoke test).

Per estimator:
- the physician score (HealthBench's clipped mean, with its bootstrap std);
- paired differences against the first rollout and against synthesis (bootstrap CI over
  conversations);
- anchor tokens per conversation;
- which rollout the response is closest to (word-set Jaccard), by its position in the prompt. A
  small anchor re-telling the candidate it read last is the bias the math estimators fight; chance
  is 1/G.

    python bench/reference_estimators_freeform.py --estimators synthesis,permutation:k=2,recursive:m=2,t=1

Every call is cached. A stopped run (Ctrl-C, SIGTERM) writes this run's calls to
OUT/calls.jsonl.gz, which is imported again at the start, so the same command resumes elsewhere.
Writes OUT/healthbench_hard20.{md,summary.json,references.jsonl.gz}. Ends with
`reference_estimators_freeform: n=20 single=... synthesis=... best=NAME best_score=... best_minus_single=... ci_lo=... last_copy_share=...`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shlex
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from catrl import healthbench
from catrl.cache import CallCache, export_calls, import_calls
from catrl.datasets import load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.estimators import check_estimator, split_specs
from catrl.metrics import paired_diff
from catrl.types import Reference, Sampling

ANCHOR_SAMPLING = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0)  # rubric_validity's
_WORD = re.compile(r"\w+")


def closest(text: str, rollouts: list[str]) -> tuple[int, float]:
    """The rollout the response shares most words with (Jaccard over word sets), and that similarity."""
    ref = set(_WORD.findall(text.lower()))
    sims = [len(ref & s) / len(ref | s) if ref | s else 1.0 for s in (set(_WORD.findall(r.lower())) for r in rollouts)]
    j = max(range(len(sims)), key=lambda i: (sims[i], -i))
    return j, sims[j]


def copy_position(ref: Reference, rollouts: list[str]) -> dict:
    """Where the closest rollout sat in the prompt of the chosen call (None for prompts of syntheses)."""
    j, sim = closest(ref.text, rollouts)
    order = [o for o in (ref.order or []) if o >= 0]
    return {"closest": j, "similarity": sim, "position": order.index(j) if j in order else None,
            "last": bool(order) and order[-1] == j}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--rollouts", type=Path, default=Path("docs/rubric_validity/results.jsonl.gz"),
                    help="results.jsonl(.gz) of a free-form eval: the rollouts and their physician scores")
    ap.add_argument("--dataset", default="healthbench_hard20")
    ap.add_argument("--estimators", default="synthesis,permutation:k=2,recursive:m=2,t=1")
    ap.add_argument("--best", help="the estimator the figure line reports, chosen beforehand (default: the highest score here)")
    ap.add_argument("--out", type=Path, default=Path("docs/reference_estimators/healthbench"))
    ap.add_argument("--cache", type=Path, default=Path("runs/reference_estimators_freeform/cache.sqlite"))
    args = ap.parse_args()
    rows = [json.loads(x) for x in gzip.open(args.rollouts, "rt")] if args.rollouts.suffix == ".gz" else \
        [json.loads(x) for x in args.rollouts.read_text().splitlines()]
    groups = [[r["text"] for r in row["rollouts"]] for row in rows]
    g = len(groups[0])
    specs = split_specs(args.estimators)
    ests = {s: check_estimator(s, g, "freeform") for s in specs}  # bad specs fail here, before any model loads
    if args.best and args.best not in specs:
        ap.error(f"--best {args.best!r} is not one of --estimators")
    by_id = {e.id: e for e in load_examples(args.dataset)}
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        ap.error(f"{args.rollouts}: conversation {missing[0]} is not in {args.dataset}")
    examples = [by_id[row["id"]] for row in rows]

    console = Console(stderr=True)
    cache = CallCache(args.cache)
    own = args.out / "calls.jsonl.gz"
    if own.exists():
        console.print(f"{own}: imported {import_calls(cache, own)[0]:,} calls")
    engine = CachedEngine(LlamaCppEngine(args.model, max_seqs=32, n_ctx_seq=4096), cache)  # rubric_validity's engine
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results = run(ests, engine, examples, groups, console)
    finally:
        n = export_calls(cache, own, engine_contains=engine.identity, kind="generate")
        console.print(f"{own}: {n:,} calls of this run")
    report(args, rows, results, engine.identity)


def run(ests: dict, engine: CachedEngine, examples: list, groups: list[list[str]], console: Console) -> dict[str, dict]:
    out: dict[str, dict] = {}
    t0 = time.time()
    for spec, est in ests.items():
        before, t1 = engine.calls_made, time.time()
        refs = est.estimate_many(engine, groups, "freeform", ANCHOR_SAMPLING, ids=[e.id for e in examples])
        graded = healthbench.grade(engine, examples, [r.text for r in refs])
        out[spec] = {"estimator": est.spec(), "refs": refs, "scores": [x.score for x in graded],
                     "verdicts": [[asdict(v) for v in x.verdicts] for x in graded],
                     "copies": [copy_position(r, grp) for r, grp in zip(refs, groups, strict=True)],
                     "tokens": [r.anchor_tokens for r in refs], "fresh_calls": engine.calls_made - before, "seconds": time.time() - t1}
        console.print(f"[{time.time() - t0:6.0f}s] {spec}: physician score {healthbench.clipped_mean(out[spec]['scores'])['score']:.3f} "
                      f"({out[spec]['fresh_calls']} new calls)")
    return out


def report(args: argparse.Namespace, rows: list[dict], results: dict[str, dict], identity: str) -> None:
    g = len(rows[0]["rollouts"])
    single = [row["rollouts"][0]["score"] or 0.0 for row in rows]
    mean_roll = [sum(x["score"] or 0.0 for x in row["rollouts"]) / g for row in rows]
    head = ["response", "physician score", "bootstrap std", "- first rollout [CI]", "- synthesis [CI]",
            "anchor tok/conv (prompt+compl)", "closest rollout by position", "closest sat last", "mean similarity to it"]
    fmt = lambda d: f"{d.diff:+.3f} [{d.lo:+.3f},{d.hi:+.3f}]"  # noqa: E731
    syn = [s or 0.0 for s in results["synthesis"]["scores"]] if "synthesis" in results else None
    cells = []
    for name, scores in (("first rollout", single), ("rollout mean", mean_roll)):
        m = healthbench.clipped_mean(scores)
        cells.append([name, f"{m['score']:.3f}", f"{m['bootstrap_std']:.3f}", "-",
                      fmt(paired_diff(scores, syn)) if syn else "-", "0+0", "-", "-", "-"])
    summary: dict = {}
    for spec, r in results.items():
        sc = [s or 0.0 for s in r["scores"]]
        m = healthbench.clipped_mean(r["scores"])
        d1, ds = paired_diff(sc, single), (paired_diff(sc, syn) if syn and spec != "synthesis" else None)
        pos = [c["position"] for c in r["copies"] if c["position"] is not None]
        table = [sum(1 for p in pos if p == i) for i in range(g)]
        last = sum(c["last"] for c in r["copies"] if c["position"] is not None)
        pt, ct = (sum(t[k] for t in r["tokens"]) / len(rows) for k in (0, 1))
        sim = sum(c["similarity"] for c in r["copies"]) / len(rows)
        cells.append([spec, f"{m['score']:.3f}", f"{m['bootstrap_std']:.3f}", fmt(d1), fmt(ds) if ds else "-", f"{pt:.0f}+{ct:.0f}",
                      " ".join(map(str, table)) if pos else "-", f"{last}/{len(pos)}" if pos else "-", f"{sim:.2f}"])
        summary[spec] = {"estimator": r["estimator"], "score": m, "minus_single": asdict(d1), "minus_synthesis": asdict(ds) if ds else None,
                         "prompt_tokens_per_conv": pt, "completion_tokens_per_conv": ct, "fresh_calls": r["fresh_calls"], "seconds": r["seconds"],
                         "closest_position_counts": table, "closest_last": last, "closest_in_prompt": len(pos), "mean_similarity": sim}
    cmd = shlex.join(["python", *sys.argv])
    md = "\n".join("| " + " | ".join(c) + " |" for c in [head, ["---"] * len(head), *cells])
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.dataset
    (args.out / f"{name}.summary.json").write_text(json.dumps(
        {"command": cmd, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "engine": identity, "conversations": len(rows), "g": g,
         "anchor_sampling": ANCHOR_SAMPLING.to_dict(), "first_rollout": healthbench.clipped_mean(single), "estimators": summary}, indent=2))
    with gzip.open(args.out / f"{name}.references.jsonl.gz", "wt") as f:
        for spec, r in results.items():
            for row, ref, score, verdicts, copy in zip(rows, r["refs"], r["scores"], r["verdicts"], r["copies"], strict=True):
                f.write(json.dumps({"estimator": spec, "id": row["id"], "score": score, "text": ref.text, "flags": ref.flags,
                                    "order": ref.order, "calls": ref.calls, "closest": copy, "verdicts": verdicts}) + "\n")
    best = args.best or max(summary, key=lambda s: summary[s]["score"]["score"])
    b = summary[best]
    syn_part = f"synthesis={summary['synthesis']['score']['score']:.3f} " if "synthesis" in summary else ""
    share = b["closest_last"] / b["closest_in_prompt"] if b["closest_in_prompt"] else 0.0
    line = (f"reference_estimators_freeform: n={len(rows)} single={healthbench.clipped_mean(single)['score']:.3f} {syn_part}"
            f"best={best} best_score={b['score']['score']:.3f} best_minus_single={b['minus_single']['diff']:+.3f} "
            f"ci_lo={b['minus_single']['lo']:+.3f} last_copy_share={share:.2f}")
    (args.out / f"{name}.md").write_text(f"`{cmd}`\n\n{platform.machine()}, {os.cpu_count()} cores; {identity} as anchor and grader; "
                                         f"{len(rows)} conversations x G={g}\n\n{md}\n\n    {line}\n")
    print(md)
    print(line)


if __name__ == "__main__":
    main()
