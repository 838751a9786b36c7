"""PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _save(fig, ax, path: Path) -> Path:
    """Legend, grid, and the PNG written (its directory made); the figure closed."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def sweep_single_line(summary: dict[str, Any]) -> float | None:
    """Single-sample accuracy for the sweep plot, or None when it was measured on other questions
    than the sweep (a sweep on the first 50 of 200): there, G=1 is the single sample."""
    sweep = summary.get("sweep") or {}
    single = summary.get("methods", {}).get("single")
    if not sweep or not single or single.get("n") != next(iter(sweep.values()))["cat"]["n"]:
        return None
    return single["mean"]


SWEEP_METHODS = (("cat", "CaT (synthesis)", "tab:red", "o", "-"), ("majority", "majority vote", "tab:blue", "s", "--"))
"""(summary key, legend label, colour, marker, line style): the vote's dashed line, drawn last, lets CaT's show through."""
SWEEP_DODGE = 0.05
"""Horizontal offset between methods, in log2(G) units: lines that coincide (CaT equal to the vote at
every G, as on the README's first command) stay visible side by side."""


def dodged(ks: list[int], i: int, n: int, dodge: float = SWEEP_DODGE) -> list[float]:
    """The x positions of method i of n on the log2 G axis, spread symmetrically around each G."""
    shift = (i - (n - 1) / 2) * dodge
    return [k * 2**shift for k in ks]


def draw_sweep(ax, summary: dict[str, Any]) -> None:
    """Accuracy versus G for CaT and majority vote, with 95% CIs, on `ax`; each method dodged sideways
    and with its own marker, so coinciding lines both show."""
    sweep = summary["sweep"]
    ks = sorted(int(k) for k in sweep)
    for i, (name, label, color, marker, style) in enumerate(SWEEP_METHODS):
        acc = [sweep[str(k)][name] for k in ks]
        mean = [a["mean"] for a in acc]
        err = [[max(0.0, a["mean"] - a["lo"]) for a in acc], [max(0.0, a["hi"] - a["mean"]) for a in acc]]
        ax.errorbar(dodged(ks, i, len(SWEEP_METHODS)), mean, yerr=err, marker=marker, linestyle=style, capsize=3, color=color,
                    label=label)
    single = sweep_single_line(summary)
    if single is not None:
        ax.axhline(single, color="gray", linestyle="--", linewidth=1, label="single sample")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("rollouts per question (G)")
    ax.set_ylabel("accuracy")


def plot_sweep(summary: dict[str, Any], path: Path, title: str = "") -> Path | None:
    """Accuracy versus G for CaT and majority vote, with 95% CIs (draw_sweep), as a PNG."""
    sweep = summary.get("sweep") or {}
    if not sweep:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    draw_sweep(ax, summary)
    n = next(iter(sweep.values()))["cat"]["n"]
    ax.set_title(f"{title or 'accuracy vs G'} ({n} questions)")
    return _save(fig, ax, path)


TRAIN_PANELS = (
    ("reward", "CaT reward (mean)"),
    ("cat/zero_variance_groups", "groups with zero reward variance"),
    ("cat/reference_agrees_with_majority", "reference = majority answer"),
    ("cat/reference_accuracy_vs_gold", "reference accuracy vs gold (monitoring)"),
    ("cat/rollout_accuracy_vs_gold", "rollout accuracy vs gold (monitoring)"),
    ("completions/mean_length", "completion length (tokens)"),
    ("completions/clipped_ratio", "cut off at max length"),
    # GRPO's loss is ~0 by construction with one update per batch (ratio 1, advantages centred); the
    # gradient norm shows whether a step learned anything (0 when every group's rewards tie)
    ("grad_norm", "gradient norm"),
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows, the last row per step winning (a resumed run re-logs steps)."""
    import json

    by_step: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            by_step[int(row.get("step", 0))] = row
    return [by_step[k] for k in sorted(by_step)]


def plot_curves(metrics_path: Path, path: Path, title: str = "", smooth: int = 5) -> Path | None:
    """Training curves of a CaT-RL run: reward, zero-variance groups, reference agreement and
    (when gold exists) reference accuracy, completion length, loss; raw points plus a moving mean."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(k, label) for k, label in TRAIN_PANELS if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 1.9 * len(panels)), dpi=110, sharex=True, squeeze=False)
    for ax, (key, label) in zip(axes[:, 0], panels):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)
        ax.plot(x, y, ".", color="tab:gray", markersize=3, alpha=0.6)
        if len(y) >= smooth:
            ax.plot(x[smooth - 1 :], np.convolve(y, np.ones(smooth) / smooth, mode="valid"), color="tab:red", linewidth=1.5)
        ax.set_ylabel(label, fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("GRPO step")
    if title:
        axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy_over_training(points: dict[str, list[tuple[int, dict[str, float]]]], path: Path, title: str = "") -> Path | None:
    """Greedy accuracy against GRPO step, one line per question set (`{"train": [(step, accuracy), ...]}`,
    each accuracy a dict with mean, lo, hi), with 95% CIs as bands."""
    if not any(points.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for (name, pts), color in zip(points.items(), ("tab:red", "tab:blue", "tab:green", "tab:gray"), strict=False):
        pts = sorted(pts, key=lambda p: p[0])
        x = [p[0] for p in pts]
        ax.plot(x, [p[1]["mean"] for p in pts], marker="o", color=color, label=name)
        ax.fill_between(x, [p[1]["lo"] for p in pts], [p[1]["hi"] for p in pts], color=color, alpha=0.15)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("greedy accuracy")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, ax, path)


GATE_BARS = (("precision", "precision: rewarded rollouts that are right"), ("recall", "recall: right rollouts rewarded"),
             ("accuracy", "accuracy: reward agrees with correctness"), ("label_accuracy", "label accuracy: reference right"))


def plot_gate(rows: list[Any], path: Path, title: str = "") -> Path:
    """The reward-accuracy gate: per reward, grouped bars of precision, recall, accuracy and label accuracy
    (a missing value, e.g. a control's label, is left out, not drawn as 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4))
    width = 0.8 / len(GATE_BARS)
    for j, (key, label) in enumerate(GATE_BARS):
        xs = [i + (j - (len(GATE_BARS) - 1) / 2) * width for i, r in enumerate(rows) if getattr(r, key) is not None]
        ys = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks(range(len(rows)), [r.name for r in rows], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=9)
    return _save(fig, ax, path)
