"""CaT-RL on this CPU, end to end: greedy accuracy before, the GRPO run, greedy accuracy after.

The run is docs/cat_rl/config.yaml (Qwen2.5-Coder-0.5B policy with LoRA in transformers, the same
initial model frozen on llama.cpp as anchor, the first 200 GSM8K test questions as unlabeled
prompts; no label reaches the reward). Accuracy is greedy, through the same engine before and after,
on those 200 questions and on 200 disjoint ones (GSM8K test 200-399), with Wilson CIs and paired
differences. The engine is llama.cpp by default (the policy's GGUF, then the same GGUF with the
trained LoRA converted: the weights the trainer sampled from, ~10x faster than transformers' generate
on this CPU); `--eval-engine transformers` evaluates the HF policy and the merged model instead. Every stage resumes: the evaluations through the call cache,
training from its last checkpoint. Training runs first (its checkpoints are the state a stop keeps). Also says why accuracy moved or not: the share of greedy answers
with a final answer and cut off at the limit, and the training audit graded against gold afterwards
(reference accuracy, and the share of rewarded rollouts that were right). Copies metrics, curves and
the summary into docs/cat_rl/, and, with keep_adapter_steps, greedy accuracy at each kept adapter
(accuracy_over_training.png); ends with `cat_rl: before=<acc> after=<acc> heldout_before=<acc> heldout_after=<acc>`.

    python bench/cat_rl.py [--config docs/cat_rl/config.yaml] [--set steps=100] [--eval-only] [--curve-steps 50]
    python bench/cat_rl.py --set reward=majority --set output_dir=runs/ttrl --out docs/ttrl   # the TTRL baseline
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from catrl.cache import CallCache
from catrl.datasets import gold_answer, load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.transformers import TransformersEngine
from catrl.hf_policy import resolve_policy
from catrl.metrics import accuracy, paired_diff
from catrl.paths import default_call_cache
from catrl.precision import resolve_dtype
from catrl.report.plots import plot_accuracy_over_training
from catrl.report.table import AUDIT_HEADER, audit_rows, positions_line
from catrl.rollouts import build_request
from catrl.run_audit import Stretch, grade_group, lone_positions, read_audit, stretches
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.lora_gguf import adapter_gguf_for
from catrl.train import kept_adapters, policy_gguf, resolve_rollouts, train
from catrl.train_config import load_config
from catrl.types import Sampling
from catrl.verify import extract_answer, is_right

GREEDY = Sampling(temperature=0.0, max_tokens=512, seed=0)
CODE = re.compile(r"```\s*(?:python|py)\b", re.IGNORECASE)


@dataclass
class Graded:
    """One greedy answer: whether it states a final answer at all, hit the token limit, is right, and reasons in code.

    `code` marks a fenced Python block. Nothing runs it, so the model also writes the block's "output" itself; Spurious
    Rewards (arXiv 2506.10947) found that rewards which know nothing move Qwen2.5 models toward code reasoning.
    """

    answered: bool
    truncated: bool
    correct: bool
    code: bool = False


def greedy_graded(engine, examples, label: str) -> list[Graded]:
    done, t0 = [0], time.time()

    def tick(i, comps):
        done[0] += 1
        if done[0] % 16 == 0 or done[0] == len(examples):
            print(f"  [{time.time() - t0:6.0f}s] {label}: {done[0]}/{len(examples)}", flush=True)

    groups = engine.generate([build_request(e, "solve") for e in examples], GREEDY, n=1, on_result=tick)
    out = []
    for e, g in zip(examples, groups, strict=True):
        ans = extract_answer(g[0].text)
        gold = gold_answer("gsm8k", e.gold)
        right = is_right(gold, ans)
        out.append(Graded(answered=ans is not None, truncated=g[0].finish_reason == "length", correct=right,
                          code=bool(CODE.search(g[0].text))))
    return out


def correct(graded: list[Graded]) -> list[bool]:
    return [x.correct for x in graded]


def breakdown(graded: list[Graded]) -> dict:
    """Why answers are wrong: the share with no final answer, cut off at the limit, accuracy where answered, and the
    share reasoning in code with the accuracy with and without it."""
    n = len(graded)
    answered = [x for x in graded if x.answered]
    coded, plain = [x for x in graded if x.code], [x for x in graded if not x.code]
    return {
        "answered": sum(x.answered for x in graded) / n,
        "truncated": sum(x.truncated for x in graded) / n,
        "accuracy_when_answered": (sum(x.correct for x in answered) / len(answered)) if answered else 0.0,
        "code": sum(x.code for x in graded) / n,
        "accuracy_with_code": (sum(x.correct for x in coded) / len(coded)) if coded else 0.0,
        "accuracy_without_code": (sum(x.correct for x in plain) / len(plain)) if plain else 0.0,
    }


def engine_factory(cfg, on_llamacpp: bool, gguf: Path | None, base_dir: Path, cache: CallCache):
    """Greedy engines for each evaluated policy: llama.cpp with the adapter as a LoRA GGUF, else transformers."""

    def engine_for(trained: Path | None, adapter: Path | None):
        if on_llamacpp and (trained is None or adapter is not None):
            lora = adapter_gguf_for(adapter, gguf) if adapter is not None else None
            return CachedEngine(LlamaCppEngine(str(gguf), max_seqs=32, n_ctx_seq=1024, n_threads=cfg.threads, lora_path=lora), cache)
        return CachedEngine(TransformersEngine(trained or base_dir, dtype=cfg.dtype, threads=cfg.threads), cache)

    return engine_for


def evaluate_both(engine, train_ex, held_ex, label: str) -> tuple[list[Graded], list[Graded]]:
    """Greedy answers of one policy on the train and held-out questions; closes the engine."""
    try:
        return greedy_graded(engine, train_ex, f"{label}, train"), greedy_graded(engine, held_ex, f"{label}, held-out")
    finally:
        engine.close()


def curve_adapters(output_dir: Path, on_llamacpp: bool, steps: set[int] | None, below: int | None = None) -> list[tuple[int, Path]]:
    """The kept adapters to evaluate over training: those of `steps` (None: all), before step `below`; llama.cpp only."""
    kept = kept_adapters(output_dir) if on_llamacpp else []
    return [(st, a) for st, a in kept if (steps is None or st in steps) and (below is None or st < below)]


def over_training(engine_for, res, before, after, train_ex, held_ex, on_llamacpp: bool, steps: set[int] | None) -> dict:
    """Accuracy over training: the same greedy evaluation at every kept adapter (keep_adapter_steps) before the last,
    or at those of `steps` only (each costs as much as the evaluation after)."""
    over = {"train": [(0, before[0])], "held-out": [(0, before[1])]}
    for step, adapter in curve_adapters(res.output_dir, on_llamacpp, steps, below=res.steps):
        tr, he = evaluate_both(engine_for(adapter, adapter), train_ex, held_ex, f"step {step}")
        over["train"].append((step, tr))
        over["held-out"].append((step, he))
    over["train"].append((res.steps, after[0]))
    over["held-out"].append((res.steps, after[1]))
    return {k: [(step, asdict(accuracy(correct(g)))) for step, g in v] for k, v in over.items()}


def trained_on(graded: list[Graded], examples, ids: set[str]) -> list[Graded]:
    """The greedy answers to the training questions the run sampled (100 steps of one question see only some of the 200)."""
    return [g for g, e in zip(graded, examples, strict=True) if e.id in ids]


def compare(b: list[Graded], a: list[Graded]) -> dict:
    return {"before": asdict(accuracy(correct(b))), "after": asdict(accuracy(correct(a))),
            "diff": asdict(paired_diff(correct(a), correct(b))),
            "breakdown": {"before": breakdown(b), "after": breakdown(a)}}


def write_outputs(res, out: Path, before, after, over_acc: dict, train_s: float, train_ex) -> dict:
    """Copy the run's metrics, curves, config and starts, the gzipped audit trail and summary.json into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "curves.png", "config.yaml", "starts.jsonl"):
        if (res.output_dir / name).exists():
            shutil.copy(res.output_dir / name, out / ("run_config.yaml" if name == "config.yaml" else name))
    rows = read_audit(res.output_dir)
    seen = {str(r.get("id")) for r in rows}
    audit = stretches([grade_group(r) for r in rows], parts=4)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # for `catrl audit docs/cat_rl/audit.jsonl.gz`
    (out / "audit.jsonl.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "steps": res.steps, "train_seconds_this_process": train_s,
        "train": compare(before[0], after[0]),
        "trained_on": compare(trained_on(before[0], train_ex, seen), trained_on(after[0], train_ex, seen)),
        "heldout": compare(before[1], after[1]),
        "reward_audit": [asdict(p) for p in audit],
        "lone_positions": lone_positions(rows),
        "over_training": over_acc,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_report(summary: dict, cfg, args, res, on_llamacpp: bool, questions: tuple[int, int]) -> None:
    """The printed output committed as docs/cat_rl/output.txt; ends with the `cat_rl:` line."""
    print(f"command: python bench/cat_rl.py --config {args.config} {' '.join('--set ' + s for s in args.set)}; machine {summary['machine']}")
    teacher = f"anchor {cfg.anchor or cfg.policy} (llama.cpp, frozen)" if cfg.reward == "cat" else "reward: majority vote (TTRL), no anchor"
    print(f"policy {cfg.policy} + LoRA r={cfg.lora_r} ({resolve_dtype(cfg.dtype)}); {teacher}; {res.steps} GRPO steps, "
          f"G={cfg.g}, {cfg.prompts_per_step} question(s)/step, lr {cfg.learning_rate}, rollouts on {resolve_rollouts(cfg)}; "
          f"greedy on {'llama.cpp' if on_llamacpp else 'transformers'}, max {GREEDY.max_tokens} tokens")
    print(f"{'set':<26}{'before':>18}{'after':>18}{'after - before':>26}")
    rows = (("train", f"train (GSM8K {cfg.offset}-{cfg.offset + cfg.limit - 1})"),
            ("trained_on", f"  of which trained on ({summary['trained_on']['before']['n']})"), ("heldout", "held-out (disjoint)"))
    for key, label in rows:
        s = summary[key]
        b, a, d = s["before"], s["after"], s["diff"]
        print(f"{label:<26}{b['mean']:>7.3f} [{b['lo']:.3f},{b['hi']:.3f}]{a['mean']:>7.3f} [{a['lo']:.3f},{a['hi']:.3f}]"
              f"{d['diff']:>+9.3f} [{d['lo']:+.3f},{d['hi']:+.3f}] p={d['mcnemar_p']:.3g}")
    print(f"{'why (before -> after)':<26}{'has an answer':>18}{'cut off at limit':>18}{'right when answered':>26}{'writes code':>18}")
    for key, label in rows:
        bb, ab = summary[key]["breakdown"]["before"], summary[key]["breakdown"]["after"]
        print(f"{label:<26}{bb['answered']:>9.3f} -> {ab['answered']:.3f}{bb['truncated']:>9.3f} -> {ab['truncated']:.3f}"
              f"{bb['accuracy_when_answered']:>17.3f} -> {ab['accuracy_when_answered']:.3f}"
              f"{bb.get('code', 0.0):>9.3f} -> {ab.get('code', 0.0):.3f}")
    over_acc = summary["over_training"]
    if len(over_acc["train"]) > 2:
        plot_accuracy_over_training(over_acc, args.out / "accuracy_over_training.png",
                                    title=f"greedy accuracy during CaT-RL ({cfg.policy}, {questions[0]} + {questions[1]} questions)")
        print("greedy accuracy over training (step: train, held-out):  " + "   ".join(
            f"{st}: {a['mean']:.3f}, {b['mean']:.3f}" for (st, a), (_, b) in zip(over_acc["train"], over_acc["held-out"], strict=True)))
    print("reward audit (training groups graded against gold afterwards; gold never reached a reward):")
    # summaries written before `referenced` existed graded a reference in every graded group
    print_audit([Stretch(**{"referenced": p["graded"], **p}) for p in summary["reward_audit"]])
    if line := positions_line(summary["lone_positions"]):
        print(line)
    print(f"cat_rl: before={summary['train']['before']['mean']:.3f} after={summary['train']['after']['mean']:.3f} "
          f"heldout_before={summary['heldout']['before']['mean']:.3f} heldout_after={summary['heldout']['after']['mean']:.3f}")


AUDIT_WIDTHS = [14, 7, 7, 16, 12, 15, 13, 15, 15, 15, 14]


def print_audit(parts: list[Stretch]) -> None:
    """The audit table (catrl.report.table's columns) as fixed-width text, for a bench's committed output."""
    print("".join(f"{h:>{w}}" for h, w in zip(AUDIT_HEADER, AUDIT_WIDTHS)))
    for r in audit_rows(parts):
        print("".join(f"{c:>{w}}" for c, w in zip(r, AUDIT_WIDTHS)))


def print_so_far(engine_for, cfg, before, train_ex, held_ex, on_llamacpp: bool, curve_steps: set[int] | None) -> None:
    """--eval-only: greedy accuracy before and at each adapter kept so far, while the run goes on.

    The same calls the whole bench makes later, so they land in the call cache; and a run that never
    ends (a lost machine) still leaves measured accuracy at the steps it reached."""
    print(f"greedy accuracy on llama.cpp, max {GREEDY.max_tokens} tokens; paired diff against before (bootstrap 95% CI, McNemar p)")
    print(f"{'policy':<10}{'train':>22}{'held-out':>22}{'train diff':>28}{'held-out diff':>28}")

    def line(label: str, tr: list[Graded], he: list[Graded], against_before: bool = True) -> None:
        accs = [accuracy(correct(g)) for g in (tr, he)]
        diffs = [paired_diff(correct(g), correct(b)) for g, b in ((tr, before[0]), (he, before[1]))] if against_before else []
        print(f"{label:<10}" + "".join(f"{a.mean:>11.3f} [{a.lo:.3f},{a.hi:.3f}]" for a in accs)
              + "".join(f"{d.diff:>+11.3f} [{d.lo:+.3f},{d.hi:+.3f}] p={d.mcnemar_p:.2g}" for d in diffs))

    line("before", *before, against_before=False)
    for step, adapter in curve_adapters(Path(cfg.output_dir), on_llamacpp, curve_steps):
        line(f"step {step}", *evaluate_both(engine_for(adapter, adapter), train_ex, held_ex, f"step {step}"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=Path("docs/cat_rl/config.yaml"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--eval-only", action="store_true", help="no training: accuracy before and at each adapter kept so far (warms the call cache)")
    ap.add_argument("--out", type=Path, default=Path("docs/cat_rl"))
    ap.add_argument("--eval-engine", choices=("llamacpp", "transformers"), default="llamacpp")
    ap.add_argument("--curve-steps", type=lambda v: {int(x) for x in v.split(",") if x.strip()}, default=None,
                    help="evaluate only these kept adapters, e.g. 50 (comma-separated; empty: none); default all kept")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    if cfg.limit is None:
        raise SystemExit("the config must set limit (the training questions)")
    data = load_examples(cfg.dataset, limit=cfg.offset + cfg.limit + args.heldout)
    train_ex = data[cfg.offset : cfg.offset + cfg.limit]
    held_ex = data[cfg.offset + cfg.limit :]

    if not args.eval_only:  # training first: its checkpoints are what a stopped run keeps; the evaluations are cached calls
        t0 = time.time()
        res = train(cfg)
        train_s = time.time() - t0
    gguf = policy_gguf(cfg.policy)
    on_llamacpp = args.eval_engine == "llamacpp" and gguf is not None
    engine_for = engine_factory(cfg, on_llamacpp, gguf, resolve_policy(cfg.policy), CallCache(default_call_cache()))
    before = evaluate_both(engine_for(None, None), train_ex, held_ex, "before")
    if args.eval_only:
        print_so_far(engine_for, cfg, before, train_ex, held_ex, on_llamacpp, args.curve_steps)
        return
    after = evaluate_both(engine_for(res.merged_dir, res.adapter_dir), train_ex, held_ex, "after")
    over_acc = over_training(engine_for, res, before, after, train_ex, held_ex, on_llamacpp, args.curve_steps)
    summary = write_outputs(res, args.out, before, after, over_acc, train_s, train_ex)
    print_report(summary, cfg, args, res, on_llamacpp, (len(train_ex), len(held_ex)))


if __name__ == "__main__":
    main()
