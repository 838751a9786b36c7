"""Accuracy with 95% confidence intervals and paired differences between methods.

Accuracy: Wilson score interval. Paired difference of two methods on the same questions: the mean
difference with a paired bootstrap percentile interval, and McNemar's exact test on the discordant
pairs. Pure functions over lists of booleans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass
class Accuracy:
    n: int
    correct: int
    mean: float
    lo: float
    hi: float


@dataclass
class PairedDiff:
    n: int
    diff: float
    lo: float
    hi: float
    a_only: int  # questions a gets right and b wrong
    b_only: int
    mcnemar_p: float


def accuracy(correct: Sequence[bool]) -> Accuracy:
    n, k = len(correct), int(sum(bool(c) for c in correct))
    if n == 0:
        return Accuracy(0, 0, float("nan"), float("nan"), float("nan"))
    p = k / n
    denom = 1 + Z95**2 / n
    center = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Accuracy(n, k, p, max(0.0, center - half), min(1.0, center + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_diff(a: Sequence[bool], b: Sequence[bool], iters: int = 5000, seed: int = 0) -> PairedDiff:
    """Accuracy of a minus accuracy of b on the same questions."""
    if len(a) != len(b):
        raise ValueError("paired_diff needs results on the same questions")
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(x)
    if n == 0:
        return PairedDiff(0, float("nan"), float("nan"), float("nan"), 0, 0, 1.0)
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, n, size=(iters, n))].mean(axis=1)
    a_only, b_only = int((x > 0).sum()), int((x < 0).sum())
    return PairedDiff(n, float(x.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)),
                      a_only, b_only, mcnemar_exact(a_only, b_only))


def ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks with ties averaged (1-based)."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        tie = a == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; nan when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_clustered(groups_x: Sequence[Sequence[float]], groups_y: Sequence[Sequence[float]], iters: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spearman over all pooled pairs, with a bootstrap CI that resamples whole groups (conversations),
    since rollouts of one conversation are not independent."""
    xs = [np.asarray(g, dtype=float) for g in groups_x]
    ys = [np.asarray(g, dtype=float) for g in groups_y]
    rho = spearman(np.concatenate(xs) if xs else [], np.concatenate(ys) if ys else [])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(iters if len(xs) > 1 else 0):
        pick = rng.integers(0, len(xs), size=len(xs))
        b = spearman(np.concatenate([xs[i] for i in pick]), np.concatenate([ys[i] for i in pick]))
        if not math.isnan(b):
            boots.append(b)
    lo, hi = (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))) if boots else (float("nan"), float("nan"))
    return {"rho": rho, "lo": lo, "hi": hi, "n_pairs": int(sum(len(g) for g in xs)), "n_groups": len(xs)}
