"""The reward-accuracy gate of a CaT-RL config: which label-free reward pays the right rollouts, before training.

Samples N groups of G rollouts from the config's initial policy (llama.cpp, the config's sampling and
prompt, the first N training questions), scores every group with each reward, and grades each rollout
against gold afterwards (catrl.reward_gate: precision, recall, accuracy, label accuracy, signal).
Rewards, comma-separated:
  cat               CaT with the config's anchor (the policy's initial model, as in the paper)
  cat@MODEL         CaT with another frozen anchor (an embedded name or .gguf), e.g. cat@qwen2.5-coder-1.5b
  cat@MODEL/EST     ... with a reference estimator (catrl.estimators spec), e.g. cat@qwen2.5-coder-1.5b/cluster
  majority          TTRL's majority vote
  random            Bernoulli(0.5) per rollout (the Spurious Rewards control)
  format            1 for a stated final answer

    python bench/reward_gate.py --config docs/cat_rl/config.yaml --groups 64 --out docs/cat_rl/gate

Every call is cached (resumable: run the same command again); this run's calls go to OUT/calls.jsonl.gz,
imported again at the start, so the same command elsewhere replays them. Ends with one line:
`reward_gate: groups=N best=NAME best_accuracy=... <reward>_accuracy=... ...`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from catrl.cache import CallCache, export_calls, import_calls
from catrl.control_rewards import FormatReward, RandomReward
from catrl.datasets import gold_answer, load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.factory import group_context
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.hf_policy import policy_gguf
from catrl.report.plots import plot_gate
from catrl.reward_gate import GateGroup, grade_group, reward_accuracy, score_gate
from catrl.rewards import CaTReward, MajorityReward
from catrl.rollouts import build_request
from catrl.train_config import load_config
from catrl.types import Sampling
from catrl.verify import extract_answer

console = Console(width=170)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("docs/cat_rl/config.yaml"))
    ap.add_argument("--groups", type=int, default=64, help="questions sampled (the first N training questions)")
    ap.add_argument("--rewards", default="cat,cat@qwen2.5-coder-1.5b,majority,random,format")
    ap.add_argument("--out", type=Path, default=Path("docs/cat_rl/gate"))
    ap.add_argument("--cache", type=Path, default=Path("runs/reward_gate/cache.sqlite"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = CallCache(args.cache)
    calls = args.out / "calls.jsonl.gz"
    if calls.exists():
        added, held = import_calls(cache, calls)
        console.print(f"imported {added} calls from {calls} ({held} already held)")
    t_start = time.time()

    examples = load_examples(cfg.dataset, limit=cfg.offset + (cfg.limit or args.groups))[cfg.offset:][: args.groups]
    requests = [build_request(e, cfg.prompt) for e in examples]
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.max_completion_tokens, seed=cfg.seed)
    gguf = policy_gguf(cfg.policy)
    policy = CachedEngine(LlamaCppEngine(str(gguf), max_seqs=2 * cfg.g, n_ctx_seq=cfg.max_prompt_tokens + cfg.max_completion_tokens + 16), cache)
    rollouts: list[list[str]] = []
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with Progress(console=console) as prog:
        bar = prog.add_task(f"sampling {len(requests)} groups of {cfg.g} from {cfg.policy}", total=len(requests))
        for start in range(0, len(requests), 2):
            for comps in policy.generate(requests[start:start + 2], sampling, n=cfg.g):
                rollouts.append([c.text for c in comps])
            prog.update(bar, completed=len(rollouts))
    seconds["rollouts"] = time.perf_counter() - t0
    policy.close()
    save_calls(cache, calls)
    groups = [grade_group(e.id, gold_answer(cfg.dataset, e.gold), [extract_answer(r) for r in rs], cfg.match) for e, rs in zip(examples, rollouts, strict=True)]

    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    for name in names:
        reward, engine = build(name, cfg, cache)
        t0 = time.perf_counter()
        with Progress(console=console) as prog:
            bar = prog.add_task(f"reward {name}", total=len(groups))
            score_gate(groups, rollouts, name, reward, cfg.match, progress=lambda done, total: prog.update(bar, completed=done))
        seconds[name] = time.perf_counter() - t0
        if engine is not None:
            engine.close()
            save_calls(cache, calls)
    report(args, cfg, names, groups, seconds, t_start)


def build(name: str, cfg, cache: CallCache):
    """A reward from its spec, and the engine to close after it (None for the anchor-free ones)."""
    if name == "majority":
        return MajorityReward(match=cfg.match), None
    if name == "random":
        return RandomReward(p=0.5, seed=cfg.seed), None
    if name == "format":
        return FormatReward(), None
    kind, _, rest = name.partition("@")
    if kind != "cat":
        raise SystemExit(f"--rewards: unknown reward {name!r} (cat, cat@MODEL, cat@MODEL/ESTIMATOR, majority, random, format)")
    model, _, estimator = rest.partition("/")
    model = model or cfg.anchor or cfg.policy
    engine = CachedEngine(LlamaCppEngine(model, max_seqs=4, n_ctx_seq=group_context(cfg.g, cfg.max_completion_tokens, cfg.anchor_max_tokens),
                                         flash_attn=cfg.anchor_flash_attn), cache)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.anchor_max_tokens, seed=cfg.seed)
    return CaTReward(engine, match=cfg.match, sampling=sampling, estimator=estimator or cfg.estimator), engine


def save_calls(cache: CallCache, path: Path) -> None:
    n = export_calls(cache, path, kind="generate")
    console.print(f"{n} calls -> {path}")


def report(args, cfg, names: list[str], groups: list[GateGroup], seconds: dict[str, float], t_start: float) -> None:
    rows = [reward_accuracy(groups, n) for n in names]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    table = Table(title=f"reward accuracy on {len(groups)} groups of {cfg.g} from {cfg.policy} ({cfg.dataset}, graded against gold afterwards)")
    for col in ("reward", "precision", "recall", "accuracy", "label acc", "rewarded", "right", "signal groups", "signal right", "s / group"):
        table.add_column(col, justify="left" if col == "reward" else "right")
    for r in rows:
        table.add_row(r.name, fmt(r.precision), fmt(r.recall), fmt(r.accuracy), fmt(r.label_accuracy), f"{r.rewarded}/{r.rollouts}",
                      f"{r.right}/{r.rollouts}", f"{r.signal_groups}/{r.groups}", f"{r.signal_right}/{r.signal_groups}",
                      f"{seconds.get(r.name, 0) / max(1, r.groups):.1f}")
    console.print(table)
    best = max(rows, key=lambda r: r.accuracy)
    line = f"reward_gate: groups={len(groups)} best={best.name} best_accuracy={best.accuracy:.3f} " + " ".join(
        f"{r.name}_accuracy={r.accuracy:.3f} {r.name}_precision={fmt(r.precision)}" for r in rows)
    console.print(line, soft_wrap=True)
    with open(args.out / "groups.jsonl", "w", encoding="utf-8") as f:
        for g in groups:
            f.write(json.dumps(g.__dict__, ensure_ascii=False) + "\n")
    summary = {"command": "python " + shlex.join(sys.argv), "machine": f"{platform.machine()}, {platform.processor() or ''}",
               "config": str(args.config), "policy": cfg.policy, "g": cfg.g, "groups": len(groups),
               "seconds": seconds, "wall_s": time.time() - t_start, "rewards": [r.as_row() for r in rows], "line": line}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_gate(rows, args.out / "gate.png", f"reward accuracy before training: {cfg.policy}, {len(groups)} {cfg.dataset} groups of {cfg.g}")
    console.print(f"-> {args.out}/summary.json, groups.jsonl, gate.png")


if __name__ == "__main__":
    main()
