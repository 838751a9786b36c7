"""The time budget of a training start (`max_minutes`): stop cleanly before the session does.

A working session ends at a fixed time and the next may be on another machine, so a run must stop
at a step boundary with its state saved, not be killed mid-step. After each optimizer step the
budget asks whether the slowest recent step would still fit; if not, the Trainer saves and stops.
A budget that cannot hold even one step, as the run has measured its steps, is refused up front.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catrl.errors import InputError

log = logging.getLogger(__name__)


def budget_callback(max_seconds: float, started: float, clock: Callable[[], float] = time.monotonic):
    """Stop cleanly before the time budget runs out: after each optimizer step, if the slowest of the
    last five steps would not fit in what is left, save a checkpoint now and end training (a run
    started again resumes from it). `started`: when this start began (model loading counts too)."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self):
            self.mark: float | None = None
            self.step_seconds: list[float] = []
            self.stopped_at: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.mark = clock()

        def on_step_end(self, args, state, control, **kwargs):
            now = clock()
            self.step_seconds.append(now - (self.mark if self.mark is not None else started))
            self.mark = now
            if state.global_step < state.max_steps and now - started + max(self.step_seconds[-5:]) > max_seconds:
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = state.global_step
                log.info("time budget: stopping after step %d (%.0f s of %.0f used; a step takes up to %.0f s)",
                         state.global_step, now - started, max_seconds, max(self.step_seconds[-5:]))

    return TimeBudget()


def median_step_seconds(metrics_path: Path) -> float | None:
    """The median step time a run has logged so far (None before its first step)."""
    if not metrics_path.is_file():
        return None
    times = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            t = json.loads(line).get("step_time")
        except json.JSONDecodeError:
            continue
        if isinstance(t, (int, float)):
            times.append(float(t))
    return sorted(times)[len(times) // 2] if times else None


def check_budget(cfg: Any, out: Path, started: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Before training: a budget that cannot hold one step (as this run has measured steps) is an InputError."""
    if cfg.max_minutes is None:
        return
    left = cfg.max_minutes * 60 - (clock() - started)
    step = median_step_seconds(out / "metrics.jsonl")
    if step is not None and left < step:
        raise InputError(f"max_minutes={cfg.max_minutes:g} leaves {max(0.0, left):.0f} s after setup, less than one step "
                         f"(a median {step:.0f} s in {out / 'metrics.jsonl'}); nothing was trained. Give more minutes.")
    if step is None:
        log.info("max_minutes=%g: this run has no step time yet, so at least one step runs before the budget is checked", cfg.max_minutes)
