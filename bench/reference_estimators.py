"""Reference estimators against the majority vote and the paper's synthesis, on the same rollouts.

GSM8K with the embedded default (Qwen2.5-Coder-1.5B as policy and frozen anchor, G=8, the paper's
Qwen sampling, 512 rollout tokens, 1,024 reference tokens): exactly bench/cat_quality.py's setting,
so its committed calls (docs/cat_quality/calls.jsonl.gz) make the rollouts and plain CaT free. Every
estimator reads only the rollouts; gold is used only to score. Per estimator: accuracy (Wilson CI),
paired differences against majority and synthesis (bootstrap CI, McNemar), anchor tokens and wall
time per question, the lone-candidate position table (in the order each prompt showed the
candidates), disagree-with-majority and rescue counts, and its reference on the junk-last case.
Per estimator as a CaT reward too (catrl.reward_gate, graded against gold afterwards): the share of
paid rollouts that are right (precision) and of rollouts whose pay agrees with their correctness
(accuracy), as the paper pays them and with corroboration (`min_support=2`: a rollout is paid only
when another rollout reached the same answer).

    python bench/reference_estimators.py --start 0 --end 100 --estimators majority,synthesis,cluster  # the design split
    python bench/reference_estimators.py --start 100 --end 200 ...                                     # the report split
    python bench/reference_estimators.py --start 0 --end 200 ... --import-calls docs/reference_estimators/{design,report}/calls.jsonl.gz

Every call is cached (resumable) and this run's new calls go to OUT/calls.jsonl.gz, imported again
at the start, so the same command elsewhere replays them. Ends with one line per run:
`reference_estimators: dataset=gsm8k n=... majority=... cat=... best=NAME best_acc=... best_minus_majority=... ci_lo=... last_position_share=...`
and `synthesis_cost: tokens_ratio=...` (the best estimator's anchor tokens over plain CaT's).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from catrl.cache import CallCache, call_key, export_calls, import_calls
from catrl.datasets import gold_answer, load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.factory import group_context
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.estimators import parse_estimator, split_specs
from catrl.metrics import accuracy, paired_diff
from catrl.rollouts import build_request
from catrl.evaluate import EvalConfig
from catrl.selection import majority_of_answers
from catrl.reward_gate import add_reward, add_support, grade_group, reward_accuracy
from catrl.rewards import verifiable_rewards
from catrl.verify import equivalent, extract_answer, is_right

JUNK = ("lorem ipsum dolor " * 1200)[:20000] + "\nThe answer is \\boxed{99}"
SOLVED = "Each box holds 3 apples and there are 4 boxes, so 3 * 4 = 12.\n\\boxed{12}"
JUNK_GROUP = [SOLVED, SOLVED.replace("so 3 * 4", "hence 4 * 3"), "", JUNK]  # junk placed last


def same(a, b) -> bool:
    return a is not None and b is not None and equivalent(b, a).equal


def lone_last(ref, answers) -> tuple[int | None, bool | None]:
    """If one rollout alone holds the reference's answer: its position in the first prompt that shows it,
    and whether it sat last in (one of) the prompts. (None, None) otherwise; (j, None) for a vote (no prompt)."""
    holders = [i for i, a in enumerate(answers) if same(ref.answer, a)]
    if len(holders) != 1:
        return None, None
    j = holders[0]
    orders = [c["order"] for c in ref.calls if "order" in c and -1 not in c["order"]]
    shown = [o for o in orders if j in o]
    if not shown:
        return j, None
    return shown[0].index(j), any(o[-1] == j for o in shown)


def reward_rows(est: str, refs, groups, examples, golds) -> dict[str, dict]:
    """Each reference as the reward it gives (catrl.rewards.verifiable_rewards), graded per rollout against
    gold afterwards, as the paper pays and with min_support=2."""
    graded = [grade_group(e.id, gd, [extract_answer(c.text) for c in g]) for e, gd, g in zip(examples, golds, groups, strict=True)]
    for gg, ref, g in zip(graded, refs, groups, strict=True):
        add_reward(gg, est, verifiable_rewards(ref, [c.text for c in g]))
        add_support(gg, f"{est}+support=2", est, 2)
    return {k: reward_accuracy(graded, n).as_row() for k, n in (("paper", est), ("support2", f"{est}+support=2"))}


def verifier_auc(refs, answers, golds) -> tuple[float | None, int]:
    """How well the anchor-verifier's P(Yes) separates right rollouts from wrong ones (gold used only
    here, to score): the AUC over every verified rollout (0.5 is no signal), and how many were verified."""
    right, wrong = [], []
    for ref, ans, gold in zip(refs, answers, golds, strict=True):
        for c in ref.calls:
            if "p_yes" in c:
                (right if is_right(gold, ans[c["candidate"]]) else wrong).append(c["p_yes"])
    if not right or not wrong:
        return None, len(right) + len(wrong)
    wins = sum((a > b) + 0.5 * (a == b) for a in right for b in wrong)
    return wins / (len(right) * len(wrong)), len(right) + len(wrong)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dataset", default="gsm8k")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--end", type=int, default=200)
    ap.add_argument("--estimators", default="majority,confidence_vote,synthesis,cluster")
    ap.add_argument("--out", type=Path, default=Path("docs/reference_estimators"))
    ap.add_argument("--cache", type=Path, default=Path("runs/reference_estimators/cache.sqlite"))
    ap.add_argument("--rollout-calls", type=Path, default=Path("docs/cat_quality/calls.jsonl.gz"))
    ap.add_argument("--import-calls", type=Path, nargs="*", default=[], help="more committed call files to replay, e.g. another split's OUT/calls.jsonl.gz")
    ap.add_argument("--max-tokens", type=int, help="rollout tokens (default 512 on gsm8k, 1024 on math500, as the issue sets)")
    ap.add_argument("--reader-seqs", type=int, default=64, help="anchor sequences in parallel (KV memory grows with it and the rollout length)")
    ap.add_argument("--no-junk", action="store_true", help="skip the junk-last-candidate case")
    ap.add_argument("--best", help="the estimator the figure line reports, chosen on another split (default: the most accurate here)")
    args = ap.parse_args()
    specs = split_specs(args.estimators)
    for spec in specs:
        parse_estimator(spec)  # a bad name or parameter fails here, before any model loads
    if args.best and args.best not in specs:
        ap.error(f"--best {args.best!r} is not one of --estimators")
    console = Console(stderr=True)
    cache = CallCache(args.cache)
    own = args.out / "calls.jsonl.gz"
    base_keys: set[str] = set()  # calls other committed files carry: OUT/calls.jsonl.gz leaves them out
    for f in (args.rollout_calls, *args.import_calls, own):
        if f.exists():
            added, held = import_calls(cache, f)
            console.print(f"{f}: imported {added:,} calls ({held:,} already held)")
            if f != own:
                with gzip.open(f, "rt") as fh:
                    base_keys |= {call_key(r["engine"], r["kind"], r["request"]) for r in map(json.loads, fh)}

    cfg = EvalConfig(dataset=args.dataset, g=8)
    max_tokens = args.max_tokens or (512 if args.dataset == "gsm8k" else 1024)
    cfg.sampling = replace(cfg.sampling, max_tokens=max_tokens)
    examples = load_examples(args.dataset, None, args.end)[args.start:args.end]
    golds = [gold_answer(args.dataset, e.gold) for e in examples]
    policy = CachedEngine(LlamaCppEngine(args.model, max_seqs=64, n_ctx_seq=max_tokens + 512), cache, track_keys=True)
    ctx = group_context(cfg.g, cfg.sampling.max_tokens, cfg.anchor_sampling.max_tokens)
    reader = CachedEngine(LlamaCppEngine(args.model, max_seqs=args.reader_seqs, n_ctx_seq=ctx, flash_attn=False), cache, track_keys=True)
    # a stopped run (Ctrl-C, SIGTERM at a session's end) still writes its calls, so the next run resumes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args, specs, cfg, examples, golds, policy, reader, console)
    finally:
        n = export_new(cache, own, policy.identity, base_keys, policy.keys_used | reader.keys_used)
        console.print(f"{own}: {n:,} calls of this run")


def run(args: argparse.Namespace, specs: list[str], cfg: EvalConfig, examples: list, golds: list,
        policy: CachedEngine, reader: CachedEngine, console: Console) -> None:
    t0 = time.time()
    got = [0]

    def rolled(i, comps):
        got[0] += 1
        if got[0] % 5 == 0:
            console.print(f"[{time.time() - t0:6.0f}s] rollouts: {got[0]} of {len(examples)} groups")
    groups = policy.generate([build_request(e, cfg.prompt) for e in examples], cfg.sampling, n=cfg.g, on_result=rolled)
    console.print(f"[{time.time() - t0:6.0f}s] rollouts: {len(groups)} groups ({policy.calls_made} new calls)")
    answers = [[extract_answer(c.text) for c in g] for g in groups]

    rows: dict[str, dict] = {}
    for spec in specs:
        est = parse_estimator(spec)
        before, t1 = reader.calls_made, time.time()
        done = [0]

        def tick(i, comps, spec=spec):
            done[0] += 1
            if done[0] % 10 == 0:
                console.print(f"[{time.time() - t0:6.0f}s] {spec}: {done[0]} anchor calls")
        refs = est.estimate_many(reader, groups, "reasoning", cfg.anchor_sampling, ids=[e.id for e in examples], on_result=tick)
        seconds, fresh = time.time() - t1, reader.calls_made - before
        correct = [is_right(gd, r.answer) for gd, r in zip(golds, refs, strict=True)]
        maj_ans = [majority_of_answers(a).answer for a in answers]
        disagree = [not same(r.answer, m) for r, m in zip(refs, maj_ans, strict=True)]
        lone = [lone_last(r, a) for r, a in zip(refs, answers, strict=True)]
        width = cfg.g
        table = [sum(1 for p, _ in lone if p == i) for i in range(width)]
        prompted = [last for p, last in lone if p is not None and last is not None]
        pt = [r.anchor_tokens for r in refs]
        auc, verified = verifier_auc(refs, answers, golds)
        rows[spec] = {
            "estimator": est.spec(), "correct": correct, "accuracy": asdict(accuracy(correct)),
            "prompt_tokens_per_q": sum(p for p, _ in pt) / len(pt), "completion_tokens_per_q": sum(c for _, c in pt) / len(pt),
            "fresh_calls": fresh, "seconds": seconds, "seconds_per_fresh_call": seconds / fresh if fresh else None,
            "lone_position_counts": table, "lone_in_prompt": len(prompted),
            "last_position_share": sum(prompted) / len(prompted) if prompted else 0.0,
            "disagree_with_majority": sum(disagree), "verifier_auc": auc, "verified_rollouts": verified,
            "right_when_disagreeing": sum(c and d for c, d in zip(correct, disagree, strict=True)),
            "flags": sorted({f for r in refs for f in r.flags}),
            "reward": reward_rows(spec, refs, groups, examples, golds),
            "references": [{"id": e.id, "answer": r.answer, "correct": c, "flags": r.flags, "order": r.order, "calls": r.calls}
                           for e, r, c in zip(examples, refs, correct, strict=True)],
        }
        console.print(f"[{time.time() - t0:6.0f}s] {spec}: acc {rows[spec]['accuracy']['mean']:.3f} ({fresh} new calls, {seconds:.0f}s)"
                      + (f"; verifier AUC {auc:.3f} over {verified} rollouts" if auc is not None else ""))
        if not args.no_junk:
            jr = est.estimate(reader, JUNK_GROUP, "reasoning", cfg.anchor_sampling)
            rows[spec]["junk_case"] = {"answer": jr.answer, "flags": jr.flags, "finish_reason": jr.finish_reason}

    maj_c = rows["majority"]["correct"] if "majority" in rows else None
    cat_c = rows["synthesis"]["correct"] if "synthesis" in rows else None
    for spec, r in rows.items():
        for other, oc in (("majority", maj_c), ("synthesis", cat_c)):
            if oc is not None and spec != other:
                d = paired_diff(r["correct"], oc)
                r[f"minus_{other}"] = asdict(d)
        if maj_c is not None:
            r["rescues"] = sum(c and not m for c, m in zip(r["correct"], maj_c, strict=True))
            r["harms"] = sum(m and not c for c, m in zip(r["correct"], maj_c, strict=True))

    out = Console(width=160)
    cmd = shlex.join(["python", *sys.argv])
    out.print(f"command: {cmd}; machine {platform.machine()}, {os.cpu_count()} cores; questions {args.start}-{args.end - 1}")
    head, cells = table_cells(rows)
    t = Table(*head, title=f"{args.dataset} {args.start}-{args.end - 1}: reference estimators on the same rollouts")
    for row in cells:
        t.add_row(*row)
    out.print(t)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.dataset}_{args.start}_{args.end}"
    (args.out / f"{name}.md").write_text(f"`{cmd}`\n\n" + "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *cells]) + "\n")
    summary = {"command": cmd, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "questions": [args.start, args.end],
               "policy": policy.identity, "anchor": reader.identity, "anchor_sampling": cfg.anchor_sampling.to_dict(),
               "estimators": {k: {x: y for x, y in v.items() if x not in ("correct", "references")} for k, v in rows.items()}}
    (args.out / f"{name}.summary.json").write_text(json.dumps(summary, indent=2))
    with gzip.open(args.out / f"{name}.references.jsonl.gz", "wt") as f:
        for spec, r in rows.items():
            for ref in r["references"]:
                f.write(json.dumps({"estimator": spec, **ref}) + "\n")
    if maj_c is not None and cat_c is not None:
        cands = [s for s in rows if s not in ("majority", "synthesis")]
        best = args.best or (max(cands, key=lambda s: rows[s]["accuracy"]["mean"]) if cands else "synthesis")
        b = rows[best]
        cat_tok = rows["synthesis"]["prompt_tokens_per_q"] + rows["synthesis"]["completion_tokens_per_q"]
        lines = [f"reference_estimators: dataset={args.dataset} n={len(examples)} majority={rows['majority']['accuracy']['mean']:.3f} "
                 f"cat={rows['synthesis']['accuracy']['mean']:.3f} best={best} best_acc={b['accuracy']['mean']:.3f} "
                 f"best_minus_majority={b['minus_majority']['diff']:+.3f} ci_lo={b['minus_majority']['lo']:+.3f} "
                 f"last_position_share={b['last_position_share']:.2f}",
                 f"synthesis_cost: tokens_ratio={(b['prompt_tokens_per_q'] + b['completion_tokens_per_q']) / cat_tok:.3f}"]
        print("\n".join(lines))  # plain print: one unwrapped line each, for grep
        with (args.out / f"{name}.md").open("a") as f:
            f.write("\n" + "".join(f"    {line}\n" for line in lines))


def table_cells(rows: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """The results table, one row per estimator: printed by rich and written as markdown."""
    head = ["estimator", "acc", "95% CI", "- majority [CI]", "McNemar p", "- synthesis [CI]", "rescue/harm", "disagree (right)",
            "anchor tok/q (prompt+compl)", "s/new call", "lone by position", "last share", "junk case",
            "reward prec/acc", "support=2 prec/acc"]
    fmt = lambda d: f"{d['diff']:+.3f} [{d['lo']:+.3f},{d['hi']:+.3f}]" if d else "-"  # noqa: E731
    cells = []
    for spec, r in rows.items():
        a, dm, ds = r["accuracy"], r.get("minus_majority"), r.get("minus_synthesis")
        cells.append([spec, f"{a['mean']:.3f}", f"[{a['lo']:.3f},{a['hi']:.3f}]", fmt(dm), f"{dm['mcnemar_p']:.3g}" if dm else "-", fmt(ds),
                      f"{r.get('rescues', '-')}/{r.get('harms', '-')}", f"{r['disagree_with_majority']} ({r['right_when_disagreeing']})",
                      f"{r['prompt_tokens_per_q']:.0f}+{r['completion_tokens_per_q']:.0f}",
                      f"{r['seconds_per_fresh_call']:.1f}" if r["seconds_per_fresh_call"] else "cached",
                      " ".join(map(str, r["lone_position_counts"])), f"{r['last_position_share']:.2f} (n={r['lone_in_prompt']})",
                      str(r.get("junk_case", {}).get("answer", "-")),
                      *(_prec_acc(r["reward"][k]) if "reward" in r else "-" for k in ("paper", "support2"))])
    return head, cells


def _prec_acc(row: dict) -> str:
    return f"{row['precision']:.3f}/{row['accuracy']:.3f}" if row["precision"] is not None else f"-/{row['accuracy']:.3f}"


def export_new(cache: CallCache, path: Path, engine: str, base_keys: set[str], used: set[str]) -> int:
    """The calls this run used (rollouts, anchor generations, the verifier's scorings) that no committed
    file it imported carries, as gzip JSONL: other runs sharing the cache stay out. Token logprobs are
    rounded to 4 digits (error <= 5e-5 nats) to keep new rollouts small."""
    return export_calls(cache, path, engine_contains=engine, exclude=base_keys, only=used, logprob_digits=4)


if __name__ == "__main__":
    main()
