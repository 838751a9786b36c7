"""PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_sweep(summary: dict[str, Any], path: Path, title: str = "") -> Path | None:
    """Accuracy versus G for CaT and majority vote, with 95% CIs."""
    sweep = summary.get("sweep") or {}
    if not sweep:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in sweep)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, color in (("cat", "tab:red"), ("majority", "tab:blue")):
        acc = [sweep[str(k)][name] for k in ks]
        mean = [a["mean"] for a in acc]
        err = [[max(0.0, a["mean"] - a["lo"]) for a in acc], [max(0.0, a["hi"] - a["mean"]) for a in acc]]
        ax.errorbar(ks, mean, yerr=err, marker="o", capsize=3, color=color, label="CaT (synthesis)" if name == "cat" else "majority vote")
    single = summary.get("methods", {}).get("single")
    if single:
        ax.axhline(single["mean"], color="gray", linestyle="--", linewidth=1, label="single sample")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("rollouts per question (G)")
    ax.set_ylabel("accuracy")
    n = next(iter(sweep.values()))["cat"]["n"]
    ax.set_title(title or f"accuracy vs G ({n} questions)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
