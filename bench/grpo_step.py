"""Where one CaT-RL step's time goes: policy generation, anchor synthesis, reward computation
(answer verification) and the rest (old-policy log-probs, loss, backward, optimizer step).

Runs `--steps` real GRPO steps of the README's CPU config (Qwen2.5-Coder-0.5B policy with LoRA in
transformers, the same initial model frozen on llama.cpp as anchor, G=8, 2 GSM8K questions per step,
micro-batches of 4) in a scratch directory. Generation is timed around the trainer's `_generate`, synthesis and
verification inside the reward, the whole step by trainer callbacks; the first step (warm-up) is
reported but left out of the shares. With rollouts on llama.cpp (the default for this config on a
CPU), generation includes the adapter sync, also shown on its own. Compare the two rollout paths
with `--set rollouts=transformers`. Ends with `grpo_step: cat_share=<(synthesis + reward) / step>`.

    python bench/grpo_step.py [--steps 4] [--policy qwen2.5-coder-0.5b] [--set rollouts=transformers]
    python bench/grpo_step.py --config docs/cat_rl/controls/config.yaml --steps 4 [--set micro_batch=8]   # the controls' step

The last line also says the median step (steps after the first), the LoRA rank, micro-batch and
threads, the heap setting (`CATRL_HEAP=system` for glibc's defaults, catrl.heap) and the process's peak memory, and with LoRA what the run's portable state (catrl.run_state) weighs: `... median_step_s=... state_mb=...`. The `skipped` column is the share of a step's micro-batches whose
advantages were all exactly 0, so their forward and backward pass was skipped (catrl.grpo_trainer).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from catrl import heap
from catrl.precision import resolve_dtype
from catrl.train import build_run, resolve_rollouts
from catrl.train_config import load_config


class StepClock(TrainerCallback):
    """Each step's wall time and the system time the process spent in it (page faults and zeroing show there)."""

    def __init__(self):
        self.starts, self.seconds, self.sys_starts, self.sys_seconds = [], [], [], []

    def on_step_begin(self, args, state, control, **kw):
        self.starts.append(time.perf_counter())
        self.sys_starts.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime)

    def on_step_end(self, args, state, control, **kw):
        self.seconds.append(time.perf_counter() - self.starts[-1])
        self.sys_seconds.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - self.sys_starts[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides key=value")
    ap.add_argument("--config", type=Path, default=None,
                    help="a run config to time (e.g. docs/cat_rl/controls/config.yaml); default: the README's CPU run, 2 questions a step")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="grpo_step-") as tmp:
        fixed = [f"steps={args.steps}", f"save_steps={args.steps}", f"output_dir={tmp}", "keep_adapter_steps=0", "state_dir=null", "max_minutes=null"]
        if args.config is None:
            fixed = [f"policy={args.policy}", "g=8", "prompts_per_step=2", "micro_batch=4", "max_completion_tokens=320", "anchor_max_tokens=640", *fixed]
        cfg = load_config(args.config, [*fixed, *args.set])
        run = build_run(cfg, progress=False)
        trainer, reward = run.trainer, run.reward
        clock = StepClock()
        trainer.add_callback(clock)
        gen_seconds: list[float] = []
        sync_seconds: list[float] = []
        stage_seconds: list[dict[str, float]] = []
        inner_generate = trainer._generate

        def timed_generate(*a, **kw):
            t0 = time.perf_counter()
            try:
                return inner_generate(*a, **kw)
            finally:
                gen_seconds.append(time.perf_counter() - t0)
                sync_seconds.append(run.rollouts.last_seconds.get("sync", 0.0) if run.rollouts else 0.0)

        trainer._generate = timed_generate
        inner_call = reward.__call__

        class Timed:  # keep TRL's name for the reward and record the reward's own stage times
            __name__ = reward.__name__

            def __call__(self, *a, **kw):
                out = inner_call(*a, **kw)
                stage_seconds.append(dict(reward.reward.last_seconds))
                return out

        trainer.reward_funcs[0] = Timed()
        trainer.train()
        if (anchor := getattr(reward.reward, "anchor", None)) is not None:
            anchor.close()
        if run.rollouts:
            run.rollouts.engine.close()
        state_mb = None
        if cfg.lora_r > 0:  # what the run's portable state would weigh (catrl.run_state): the checkpoint of the last step
            from catrl.run_state import save_state

            state_mb = save_state(Path(tmp) / f"checkpoint-{args.steps}", Path(tmp), Path(tmp) / "state", cfg.to_dict())["bytes"] / 2**20

    # the share of each step's micro-batches whose advantages were all 0, so their pass was skipped (catrl.grpo_trainer)
    skipped = [h.get("zero_advantage_skipped") for h in trainer.state.log_history if "loss" in h]
    rows = []
    for i, total in enumerate(clock.seconds):
        gen, st = gen_seconds[i], stage_seconds[i]
        syn, ver = st.get("synthesis", 0.0), st.get("verify", 0.0)  # an anchor-free reward has no synthesis
        rows.append((i + 1, total, gen, syn, ver, total - gen - syn - ver, sync_seconds[i], skipped[i] if i < len(skipped) else None,
                     clock.sys_seconds[i]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; policy {cfg.policy} (transformers, LoRA r={cfg.lora_r}, {resolve_dtype(cfg.dtype)}), "
          f"rollouts on {resolve_rollouts(cfg)}, anchor {cfg.anchor or cfg.policy} (llama.cpp); G={cfg.g}, {cfg.prompts_per_step} questions/step, "
          f"max {cfg.max_completion_tokens} new tokens, anchor max {cfg.anchor_max_tokens}")
    print(f"{'step':>4}{'total s':>9}{'generate':>10}{'(sync)':>8}{'synthesis':>11}{'verify':>8}{'loss+opt':>10}{'skipped':>9}{'sys s':>8}")
    for r in rows:
        skip = "" if r[7] is None else f"{r[7]:.2f}"
        print(f"{r[0]:>4}{r[1]:>9.1f}{r[2]:>10.1f}{r[6]:>8.1f}{r[3]:>11.1f}{r[4]:>8.2f}{r[5]:>10.1f}{skip:>9}{r[8]:>8.1f}")
    measured = rows[1:] or rows
    tot = sum(r[1] for r in measured)
    share = {name: sum(r[k] for r in measured) / tot for k, name in ((2, "generate"), (3, "synthesis"), (4, "verify"), (5, "loss+opt"))}
    print(f"shares over steps {measured[0][0]}-{measured[-1][0]} (median step {statistics.median(r[1] for r in measured):.1f} s): "
          + ", ".join(f"{k} {v:.1%}" for k, v in share.items()))
    median = statistics.median(r[1] for r in measured)
    state = f" state_mb={state_mb:.1f}" if state_mb is not None else ""
    print(f"grpo_step: cat_share={share['synthesis'] + share['verify']:.3f} median_step_s={median:.1f} lora_r={cfg.lora_r} "
          f"micro_batch={cfg.micro_batch or cfg.g} threads={cfg.threads or 'auto'} heap={'keep' if heap.kept() else 'system'}"
          f" peak_rss_gb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f}{state}")


if __name__ == "__main__":
    main()
