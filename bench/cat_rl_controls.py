"""CaT-RL with the controls that rule out spurious gains, run across sessions and machines.

Four arms share docs/cat_rl/controls/config.yaml (the same policy, seed, questions, steps and LoRA)
and differ only in the reward (ARMS below): CaT with the anchor the reward-accuracy gate ranks best,
CaT with the initial policy as its own anchor (the paper), TTRL's majority vote, and Bernoulli(0.5).
Qwen2.5 models gain under GRPO even from random rewards (arXiv 2506.10947), so CaT's gain counts only
against the random arm's.

Each arm trains in runs/controls/ARM with its portable state in docs/cat_rl/controls/ARM/state
(catrl.run_state: at most 15 MB, committed), so a session trains for `--minutes`, stops cleanly,
and the next session, on any machine, from a fresh clone, resumes exactly:

    python bench/cat_rl_controls.py --arm random --minutes 150     # train (resumes), then evaluate the state reached
    python bench/cat_rl_controls.py --report                      # every arm's figures so far; the figure line

After each session an arm is evaluated at the step it reached (greedy on llama.cpp, the policy's
GGUF plus the state's LoRA; `--eval-sets heldout` or `train,heldout`), which gives accuracy over
training without keeping adapters in git; the evaluations' calls go to ARM/eval_calls.jsonl.gz.
The accuracy before training is shared by all arms (the same initial policy): its calls are
docs/cat_rl/steps35/eval_calls.jsonl.gz. The report grades each arm's audit trail against gold
afterwards (reward accuracy, reference accuracy, distinct answers per group over training; gold
never reached a reward) and ends with
`cat_rl_controls: steps=N before=... heldout_before=... cat_after=... cat_heldout_after=... cat_gain_ci_lo=... majority_heldout_after=... random_heldout_after=... cat_reward_accuracy=...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cat_rl import CODE, Graded, breakdown, correct, engine_factory, greedy_graded, print_audit  # noqa: E402  (the same greedy evaluation as bench/cat_rl.py)

from catrl.cache import CallCache, export_calls, import_calls  # noqa: E402
from catrl.datasets import load_examples  # noqa: E402
from catrl.metrics import accuracy, paired_diff  # noqa: E402
from catrl.run_audit import grade_group, read_audit, step_chunks, stretches  # noqa: E402
from catrl.run_state import read_manifest, verify_state  # noqa: E402
from catrl.train import policy_gguf, train  # noqa: E402
from catrl.train_config import load_config  # noqa: E402

ROOT = Path("docs/cat_rl/controls")
ARMS = {
    # (a) the anchor setting the reward-accuracy gate ranks first (docs/cat_rl/gate, 2026-12-06): the frozen 1.5B with
    # corroboration, accuracy 0.885 (tied with majority+support=2), precision 0.667, against 0.842 / 0.568 for the 0.5B
    "cat": ["reward=cat", "anchor=qwen2.5-coder-1.5b", "min_support=2"],
    "cat_self": ["reward=cat", "anchor=qwen2.5-coder-0.5b"],  # (b) the initial policy as its own anchor (the paper)
    "majority": ["reward=majority"],  # (c) TTRL
    "random": ["reward=random"],  # (d) Bernoulli(0.5), the Spurious Rewards control
}
BEFORE_CALLS = Path("docs/cat_rl/steps35/eval_calls.jsonl.gz")


def arm_config(arm: str, extra: list[str]):
    return load_config(ROOT / "config.yaml", ARMS[arm] + [f"output_dir=runs/controls/{arm}", f"state_dir={ROOT / arm / 'state'}"] + extra)


def questions(cfg, heldout: int = 200):
    data = load_examples(cfg.dataset, limit=cfg.offset + cfg.limit + heldout)
    return {"train": data[cfg.offset:cfg.offset + cfg.limit], "heldout": data[cfg.offset + cfg.limit:]}


def evaluate(cfg, adapter: Path | None, sets: list[str], cache: CallCache, label: str) -> dict[str, list[Graded]]:
    qs = questions(cfg)
    engine = engine_factory(cfg, True, policy_gguf(cfg.policy), None, cache)(None, adapter)  # bench/cat_rl's greedy llama.cpp engine
    try:
        return {s: greedy_graded(engine, qs[s], f"{label}, {s}") for s in sets}
    finally:
        engine.close()


def arm_cache(arm: str) -> CallCache:
    """This arm's evaluation calls (its export holds nothing else), with the committed ones imported."""
    cache = CallCache(Path(f"runs/controls/{arm}/eval_cache.sqlite"))
    calls = ROOT / arm / "eval_calls.jsonl.gz"
    if calls.exists():
        import_calls(cache, calls)
    return cache


def run_arm(arm: str, minutes: float, sets: list[str], extra: list[str]) -> None:
    cfg = arm_config(arm, extra + [f"max_minutes={minutes}"])
    t0 = time.time()
    res = train(cfg)
    print(f"{arm}: {'stopped by the budget at' if res.stopped else 'finished at'} step {res.steps} of {cfg.steps} "
          f"({time.time() - t0:.0f} s this session)", flush=True)
    found = read_manifest(Path(cfg.state_dir))
    if found is None:
        return
    state, manifest = found
    verify_state(state, manifest)
    step = int(manifest["step"])
    sets = ["train", "heldout"] if step >= cfg.steps else sets  # the last step: both sets, for before/after
    if not sets:
        print(f"  {arm} step {step}: not evaluated (no --eval-sets)")
        return
    if all(s in latest_evals(arm).get(step, {}) for s in sets):
        print(f"  {arm} step {step}: already evaluated on {', '.join(sets)}")
        return
    cache = arm_cache(arm)
    got = evaluate(cfg, state, sets, cache, f"{arm} step {step}")
    export_calls(cache, ROOT / arm / "eval_calls.jsonl.gz", kind="generate")
    path = ROOT / arm / "evals.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "adapter_sha256": manifest["files"]["adapter_model.safetensors"]["sha256"],
                            "correct": {s: correct(g) for s, g in got.items()}, "breakdown": {s: breakdown(g) for s, g in got.items()},
                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    for s, g in got.items():
        a = accuracy(correct(g))
        print(f"  {arm} step {step} {s}: {a.mean:.3f} [{a.lo:.3f}, {a.hi:.3f}]")


def latest_evals(arm: str) -> dict[int, dict[str, list[bool]]]:
    """Per step, the greedy correctness per set (a later evaluation of the same step and set wins)."""
    out: dict[int, dict[str, list[bool]]] = {}
    for row in eval_rows(arm):
        out.setdefault(int(row["step"]), {}).update(row["correct"])
    return out


def eval_rows(arm: str) -> list[dict]:
    """The arm's evaluations, oldest first (ARM/evals.jsonl)."""
    path = ROOT / arm / "evals.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def breakdowns(arm: str, cfg, state: Path, step: int, sets: list[str]) -> dict[str, dict]:
    """Why the step's greedy answers are right or wrong (bench/cat_rl's breakdown), per set. Evaluations written before
    evals.jsonl kept it are replayed through the arm's committed calls (a call missing from them is generated again)."""
    got: dict[str, dict] = {}
    for row in eval_rows(arm):
        if int(row["step"]) == step:
            got.update(row.get("breakdown", {}))
    missing = [s for s in sets if s not in got]
    if missing:
        got.update({s: breakdown(g) for s, g in evaluate(cfg, state, missing, arm_cache(arm), f"{arm} step {step} (replay)").items()})
    return got


def print_why(before_why: dict[str, dict], after_why: dict[str, dict]) -> None:
    keys = {"answered": "has an answer", "truncated": "cut off", "accuracy_when_answered": "right when answered",
            "code": "writes code", "accuracy_with_code": "right with code", "accuracy_without_code": "right without"}
    print(f"  {'why (before -> after)':<24}" + "".join(f"{v:>20}" for v in keys.values()))
    for s, a in after_why.items():
        b = before_why[s]
        print(f"  {s:<24}" + "".join(f"{b[k]:>11.3f} -> {a[k]:.3f}" for k in keys))


def code_share_by_quarter(records: list[dict]) -> list[float]:
    """The share of training rollouts that reason in a fenced Python block, in each of the audit table's four stretches."""
    steps = sorted({int(r["step"]) for r in records})
    if len(steps) < 4:
        return []
    parts = [[r for r in records if int(r["step"]) in set(chunk)] for chunk in step_chunks(steps, 4)]
    return [sum(bool(CODE.search(t)) for r in p for t in r["rollouts"]) / max(1, sum(len(r["rollouts"]) for r in p)) for p in parts]


def paid_by_code(records: list[dict]) -> dict[str, list[int]]:
    """How many training rollouts with and without a fenced Python block the reward paid: [paid, rollouts]."""
    out = {"code": [0, 0], "no_code": [0, 0]}
    for r in records:
        for text, reward in zip(r["rollouts"], r["rewards"]):
            k = out["code" if CODE.search(text) else "no_code"]
            k[0] += reward > 0
            k[1] += 1
    return out


def before(cfg) -> dict[str, list[Graded]]:
    cache = CallCache(Path("runs/controls/before_cache.sqlite"))
    if BEFORE_CALLS.exists():
        import_calls(cache, BEFORE_CALLS)
    return evaluate(cfg, None, ["train", "heldout"], cache, "before")


def report() -> None:
    cfg0 = arm_config("random", [])
    graded0 = before(cfg0)
    base = {s: correct(g) for s, g in graded0.items()}
    base_why = {s: breakdown(g) for s, g in graded0.items()}
    b_tr, b_he = accuracy(base["train"]), accuracy(base["heldout"])
    print(f"before training (all arms): train {b_tr.mean:.3f} [{b_tr.lo:.3f}, {b_tr.hi:.3f}], held-out {b_he.mean:.3f} [{b_he.lo:.3f}, {b_he.hi:.3f}]")
    summary: dict = {"before": {"train": asdict(b_tr), "heldout": asdict(b_he), "why": base_why}, "arms": {}}
    steps_done = []
    finals: dict[str, dict[str, list[bool]]] = {}  # each finished arm's greedy correctness at its last step
    for arm in ARMS:
        cfg = arm_config(arm, [])
        found = read_manifest(Path(cfg.state_dir))
        if found is None:
            print(f"{arm}: not started")
            continue
        state, manifest = found
        step = int(manifest["step"])
        steps_done.append(step)
        evals = latest_evals(arm)
        row: dict = {"step": step, "over_training": {}}
        for s, c in sorted(evals.items()):
            row["over_training"][s] = {k: asdict(accuracy(v)) for k, v in c.items()}
        last = evals.get(step, {})
        if step >= cfg.steps:
            finals[arm] = last
        for s in ("train", "heldout"):
            if s in last:
                d = paired_diff(last[s], base[s])
                row[s] = {"after": asdict(accuracy(last[s])), "diff": asdict(d)}
        row["why"] = breakdowns(arm, cfg, state, step, sorted(last))
        records = read_audit(state / "audit.jsonl.gz") if (state / "audit.jsonl.gz").exists() else []
        graded = [grade_group(r) for r in records]
        row["rollouts_writing_code"] = code_share_by_quarter(records)
        row["paid_by_code"] = paid_by_code(records)
        parts = stretches(graded, parts=4) if graded else []
        row["audit"] = [asdict(p) for p in parts]
        whole = parts[-1] if parts else None
        row["reward_accuracy"] = whole.reward_agrees / whole.rollouts if whole and whole.rollouts else None
        summary["arms"][arm] = row
        print(f"\n{arm} ({' '.join(ARMS[arm])}): step {step} of {cfg.steps}")
        for s in ("train", "heldout"):
            if s in row:
                a, d = row[s]["after"], row[s]["diff"]
                print(f"  {s:<8} {a['mean']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}]  after - before {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] "
                      f"McNemar p={d['mcnemar_p']:.3g}")
        if row["why"]:
            print_why(base_why, row["why"])
        if row["over_training"]:
            print("  over training (step: " + ", ".join(row["over_training"][min(row["over_training"])].keys()) + "): " + "   ".join(
                f"{st}: " + ", ".join(f"{v['mean']:.3f}" for v in accs.values()) for st, accs in row["over_training"].items()))
        if parts:
            print_audit(parts)
        if row["rollouts_writing_code"]:
            print("  rollouts writing code, by quarter of the run: " + " ".join(f"{x:.3f}" for x in row["rollouts_writing_code"]))
        if records:
            pc = row["paid_by_code"]
            print(f"  rollouts paid: {pc['code'][0]} of {pc['code'][1]} with code, {pc['no_code'][0]} of {pc['no_code'][1]} without")
    summary["against_random"] = against(finals, "random", tuple(ARMS))  # the issue's second test of a gain
    summary["against_majority"] = against(finals, "majority", ("cat", "cat_self"))  # the anchor-free baseline (TTRL)
    summary["against_cat"] = against(finals, "cat", ("cat_self",))  # the paper's self-anchor against the gate's frozen 1.5B
    (ROOT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    arms = summary["arms"]

    def get(arm: str, *keys: str) -> str:
        v = arms.get(arm)
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return "na" if v is None else f"{v:.3f}"

    print(f"cat_rl_controls: steps={min(steps_done) if steps_done else 0} before={b_tr.mean:.3f} heldout_before={b_he.mean:.3f} "
          f"cat_after={get('cat', 'train', 'after', 'mean')} cat_heldout_after={get('cat', 'heldout', 'after', 'mean')} "
          f"cat_gain_ci_lo={get('cat', 'heldout', 'diff', 'lo')} majority_heldout_after={get('majority', 'heldout', 'after', 'mean')} "
          f"random_heldout_after={get('random', 'heldout', 'after', 'mean')} cat_reward_accuracy={get('cat', 'reward_accuracy')}")


def against(finals: dict[str, dict[str, list[bool]]], control: str, arms: tuple[str, ...]) -> dict[str, dict]:
    """Each finished arm of `arms` minus the `control` arm, paired on the same questions: which reward won."""
    out: dict[str, dict] = {}
    ctl = finals.get(control, {})
    for arm in arms:
        last = finals.get(arm, {})
        for s in ("train", "heldout"):
            if arm != control and s in last and s in ctl:
                d = paired_diff(last[s], ctl[s])
                out.setdefault(arm, {})[s] = asdict(d)
                print(f"{arm} minus {control}, {s}: {d.diff:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] McNemar p={d.mcnemar_p:.3g}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arm", choices=sorted(ARMS))
    ap.add_argument("--minutes", type=float, default=150.0, help="this session's training budget (then the evaluation)")
    ap.add_argument("--eval-sets", default="heldout", help="sets evaluated at a stop before the last step (the last step gets both)")
    ap.add_argument("--set", action="append", default=[], help="a config override for this arm (must match the arm's state)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        report()
    elif args.arm:
        run_arm(args.arm, args.minutes, [s for s in args.eval_sets.split(",") if s], args.set)
    else:
        ap.error("give --arm NAME or --report")


if __name__ == "__main__":
    main()
