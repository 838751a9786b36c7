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
  REWARD+support=K  cat or majority, paying only when at least K rollouts reach the answer (catrl.rewards.corroborate)

    python bench/reward_gate.py --config docs/cat_rl/config.yaml --groups 64 --out docs/cat_rl/gate

Every call is cached (resumable: run the same command again); this run's calls go to OUT/calls.jsonl.gz,
imported again at the start, so the same command elsewhere replays them. Ends with one line:
`reward_gate: groups=N best=NAME best_accuracy=... <reward>_accuracy=... ...`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from catrl.cache import CallCache, export_calls, import_calls
from catrl.engines.base import CachedEngine
from catrl.engines.factory import group_context
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.hf_policy import policy_gguf
from catrl.report.table import GATE_HEADER, gate_rows
from catrl.reward_gate import DEFAULT_GATE, GateGroup, parse_gate_rewards, reward_accuracy, run_gate, write_gate
from catrl.train_config import load_config

console = Console(width=170)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("docs/cat_rl/config.yaml"))
    ap.add_argument("--groups", type=int, default=64, help="questions sampled (the first N training questions)")
    ap.add_argument("--rewards", default=DEFAULT_GATE)
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

    names = parse_gate_rewards(args.rewards, cfg.g, cfg.match)

    def open_engine(role: str, model: str):
        if role == "policy":
            return CachedEngine(LlamaCppEngine(str(policy_gguf(model)), max_seqs=2 * cfg.g,
                                               n_ctx_seq=cfg.max_prompt_tokens + cfg.max_completion_tokens + 16), cache)
        n_ctx = group_context(cfg.g, cfg.max_completion_tokens, cfg.anchor_max_tokens)
        return CachedEngine(LlamaCppEngine(model, max_seqs=4, n_ctx_seq=n_ctx, flash_attn=cfg.anchor_flash_attn), cache)

    with Progress(console=console) as prog:
        bars: dict[str, int] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = prog.add_task(f"sampling {total} groups of {cfg.g}" if stage == "rollouts" else f"reward {stage}", total=total)
            prog.update(bars[stage], completed=done)
            if stage.startswith("cat") and done % 16 == 0:  # a stopped session keeps what it paid for: the calls travel in git
                save_calls(cache, calls)

        groups, seconds = run_gate(cfg, names, args.groups, open_engine, tick, after=lambda stage: save_calls(cache, calls))
    report(args, cfg, names, groups, seconds, t_start)


def save_calls(cache: CallCache, path: Path) -> None:
    n = export_calls(cache, path, kind="generate")
    console.print(f"{n} calls -> {path}")


def report(args, cfg, names: list[str], groups: list[GateGroup], seconds: dict[str, float], t_start: float) -> None:
    rows = [reward_accuracy(groups, n) for n in names]
    title = f"reward accuracy on {len(groups)} groups of {cfg.g} from {cfg.policy} ({cfg.dataset}, graded against gold afterwards)"
    table = Table(*GATE_HEADER, "s / group", title=title)  # the per-group cost of each reward in this run (cached calls cost ~0)
    for r, cells in zip(rows, gate_rows(rows), strict=True):
        table.add_row(*cells, f"{seconds.get(r.name, 0) / max(1, r.groups):.1f}")
    console.print(table)
    best = max(rows, key=lambda r: r.accuracy)
    fmt = lambda v: "na" if v is None else f"{v:.3f}"  # noqa: E731
    line = f"reward_gate: groups={len(groups)} best={best.name} best_accuracy={best.accuracy:.3f} " + " ".join(
        f"{r.name}_accuracy={r.accuracy:.3f} {r.name}_precision={fmt(r.precision)}" for r in rows)
    meta = {"command": "python " + shlex.join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "config": str(args.config), "policy": cfg.policy, "g": cfg.g, "groups": len(groups), "seconds": seconds,
            "wall_s": time.time() - t_start, "line": line}
    write_gate(args.out, groups, rows, meta, f"reward accuracy before training: {cfg.policy}, {len(groups)} {cfg.dataset} groups of {cfg.g}")
    console.print(f"-> {args.out}/summary.json, groups.jsonl, gate.png")
    console.print(line, soft_wrap=True)


if __name__ == "__main__":
    main()
