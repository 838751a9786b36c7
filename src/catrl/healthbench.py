"""HealthBench's own grading, for evaluation (never CaT's reward): a grader model checks the last
assistant turn against each physician rubric item.

Semantics follow HealthBench's grader: every part of an item must hold except where it lists
examples ("such as"); items with negative points describe undesirable behaviour and are "met" when
the response shows it. Example score = points of met items / sum of positive points. The benchmark
score is the mean clipped to [0, 1], with the bootstrap standard deviation of that clipped mean;
scores are also given per tag: example tags (theme:...) over the examples that carry them, rubric
tags (axis:...) from only the items that carry them. An item the grader gave no parseable verdict
counts as not met and is counted in `unjudged`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.judging import judge_many
from catrl.types import Criterion, Example, Rubric, Sampling, Verdict

GRADER_PROMPT = "healthbench_grader"


@dataclass
class Graded:
    """One response graded against its example's physician rubric."""

    example_id: str
    score: float | None  # None when the rubric has no positive points
    verdicts: list[Verdict]


def example_score(criteria: Sequence[Criterion], met: Sequence[bool | None]) -> float | None:
    positive = sum(c.points for c in criteria if c.points > 0)
    if positive <= 0:
        return None
    return sum(c.points for c, m in zip(criteria, met, strict=True) if m) / positive


def grade(grader: Engine, examples: Sequence[Example], responses: Sequence[str], sampling: Sampling | None = None) -> list[Graded]:
    """Grade responses[i] against examples[i]'s physician rubric: one grader call per item, all batched."""
    if len(examples) != len(responses):
        raise InputError(f"{len(examples)} examples but {len(responses)} responses")
    for e in examples:
        if not e.criteria or e.messages is None:
            raise InputError(f"{e.source or e.id}: not a HealthBench example (needs a conversation and 'rubrics')")
    items = [(e.messages, r, Rubric(e.criteria, "physician")) for e, r in zip(examples, responses, strict=True)]
    verdicts = judge_many(grader, items, "per_criterion", sampling=sampling or Sampling(temperature=0, max_tokens=200), prompt=GRADER_PROMPT)
    return [Graded(e.id, example_score(e.criteria, [v.met for v in vs]), vs) for e, vs in zip(examples, verdicts, strict=True)]


def clipped_mean(scores: Sequence[float], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """HealthBench's overall figure: mean clipped to [0, 1] and the bootstrap std of that clipped mean."""
    x = np.asarray([s for s in scores if s is not None], dtype=float)
    if x.size == 0:
        return {"score": float("nan"), "bootstrap_std": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    boots = np.clip(x[rng.integers(0, x.size, size=(n_bootstrap, x.size))].mean(axis=1), 0, 1)
    return {"score": float(np.clip(x.mean(), 0, 1)), "bootstrap_std": float(boots.std()), "n": int(x.size)}


def summarize(examples: Sequence[Example], graded: Sequence[Graded], n_bootstrap: int = 1000) -> dict:
    """Overall and per-tag scores, plus how many rubric items went unjudged."""
    by_tag: dict[str, list[float]] = defaultdict(list)
    for e, g in zip(examples, graded, strict=True):
        if g.score is not None:
            for t in e.tags:
                by_tag[t].append(g.score)
        item_tags = {t for c in e.criteria or [] for t in c.tags if not t.startswith("level:")}
        for t in item_tags:
            pairs = [(c, v.met) for c, v in zip(e.criteria, g.verdicts, strict=True) if t in c.tags]
            s = example_score([c for c, _ in pairs], [m for _, m in pairs])
            if s is not None:
                by_tag[t].append(s)
    return {
        "overall": clipped_mean([g.score for g in graded], n_bootstrap),
        "tags": {t: clipped_mean(v, n_bootstrap) for t, v in sorted(by_tag.items())},
        "unjudged": sum(v.met is None for g in graded for v in g.verdicts),
        "criteria": sum(len(g.verdicts) for g in graded),
    }
