"""Reading back a CaT-RL run's audit trail: what the reward paid for, step by step.

Every group a training run scored is one row of its audit.jsonl (step, prompt, rollouts, reference,
answers, rewards, flags, and gold when the data happened to carry it). This module grades those rows
afterwards and sums them up over stretches of the run, so one can see whether the reward pointed at
right answers and whether that changed as the policy trained. Gold is read here only, long after the
rewards were paid: it never reaches a reward.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catrl.datasets import iter_jsonl
from catrl.errors import InputError
from catrl.evaluate import lone_counts
from catrl.selection import majority_of_answers
from catrl.verify import is_right


@dataclass
class GradedGroup:
    """One audited group, graded against gold when the row has it (else the `*_right` fields are None)."""

    step: int | None
    rewards: list[float]
    flags: list[str]
    reference_right: bool | None
    majority_answer: str | None
    majority_right: bool | None
    rollouts_right: list[bool] | None
    distinct_answers: int = 0  # classes of equivalent final answers among the rollouts: the group's diversity


@dataclass
class Stretch:
    """Totals over consecutive steps of a run (or consecutive rows, for trails without steps)."""

    label: str  # "steps 1-25", "rows 1-50" or "whole run"
    first_step: int | None
    last_step: int | None
    groups: int
    reward_mean: float
    zero_variance_groups: int
    flags: dict[str, int]
    graded: int  # groups with gold; the shares below are over these
    referenced: int  # graded groups with a reference (control rewards have none): the reference's shares are over these
    reference_right: int
    majority_right: int
    reference_beat_majority: int  # reference right where the rollouts' majority was wrong: what the anchor adds
    reference_lost_to_majority: int  # reference wrong where the majority was right: what it costs
    any_right: int
    rollouts: int
    rollouts_right: int
    rewarded: int
    rewarded_right: int
    reward_agrees: int = 0  # graded rollouts whose reward (paid or not) agrees with their correctness: the reward's accuracy
    distinct_answers_mean: float = 0.0  # per group: falls as the policy's rollouts collapse onto one answer


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The rows of an audit.jsonl or .jsonl.gz (a run directory works too), with file and line in every error."""
    path = Path(path)
    if path.is_dir():
        path = path / "audit.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: no audit trail here (a CaT-RL run directory holds audit.jsonl)")
    rows = []
    for where, row in iter_jsonl(path, label=str(path)):
        for key in ("rewards", "rollouts"):
            if not isinstance(row.get(key), list):
                raise InputError(f"{where}: field {key!r} is missing or not a list")
        rows.append(row)
    return rows


def grade_group(row: dict[str, Any], mode: str = "symbolic") -> GradedGroup:
    """Grade one audit row against its gold (verifiable rows only; free-form rows have no answer to grade)."""
    gold = row.get("gold")
    answers = row.get("answers") or []
    ref = row.get("reference") or {}
    maj = majority_of_answers(answers, mode) if answers else None
    graded = gold is not None and bool(answers)
    # a control reward (random, format) has no reference to grade: its row says so in a `control:*` flag
    referenced = graded and not any(str(f).startswith("control:") for f in row.get("flags") or [])
    return GradedGroup(
        step=row.get("step"), rewards=[float(r) for r in row["rewards"]], flags=list(row.get("flags") or []),
        reference_right=is_right(gold, ref.get("answer"), mode) if referenced else None,
        majority_answer=maj.answer if maj else None,
        majority_right=is_right(gold, maj.answer, mode) if graded and maj else None,
        rollouts_right=[is_right(gold, a, mode) for a in answers] if graded else None,
        distinct_answers=maj.detail.get("classes", 0) if maj else 0,
    )


def lone_positions(rows: Sequence[dict[str, Any]]) -> list[int]:
    """evaluate.lone_counts over a training trail: per rollout position in the anchor prompt, the
    verifiable groups whose reference answer that rollout alone holds (its `matches`)."""
    return lone_counts([[m is True for m in r["matches"]] for r in rows if r.get("answers") and r.get("matches")])


def stretch(groups: Sequence[GradedGroup], label: str = "whole run") -> Stretch:
    steps = [g.step for g in groups if g.step is not None]
    rewards = [r for g in groups for r in g.rewards]
    graded = [g for g in groups if g.rollouts_right is not None]
    referenced = [g for g in graded if g.reference_right is not None]
    flags = Counter(f for g in groups for f in g.flags)
    return Stretch(
        label=label, first_step=min(steps) if steps else None, last_step=max(steps) if steps else None, groups=len(groups),
        reward_mean=sum(rewards) / len(rewards) if rewards else 0.0,
        zero_variance_groups=sum(len(set(g.rewards)) <= 1 for g in groups), flags=dict(flags),
        graded=len(graded), referenced=len(referenced),
        reference_right=sum(bool(g.reference_right) for g in referenced),
        majority_right=sum(bool(g.majority_right) for g in graded),
        reference_beat_majority=sum(bool(g.reference_right) and not g.majority_right for g in referenced),
        reference_lost_to_majority=sum(not g.reference_right and bool(g.majority_right) for g in referenced),
        any_right=sum(any(g.rollouts_right) for g in graded),
        rollouts=sum(len(g.rollouts_right) for g in graded),
        rollouts_right=sum(sum(g.rollouts_right) for g in graded),
        rewarded=sum(r > 0 for g in graded for r in g.rewards),
        rewarded_right=sum(r > 0 and ok for g in graded for r, ok in zip(g.rewards, g.rollouts_right)),
        reward_agrees=sum((r > 0) == ok for g in graded for r, ok in zip(g.rewards, g.rollouts_right)),
        distinct_answers_mean=sum(g.distinct_answers for g in groups) / len(groups) if groups else 0.0,
    )


def step_chunks(steps: Sequence[int], parts: int) -> list[list[int]]:
    """Sorted steps cut into `parts` runs of consecutive steps, as equal as the steps allow: the stretches' cut."""
    return [list(steps[k * len(steps) // parts : (k + 1) * len(steps) // parts]) for k in range(parts)]


def stretches(groups: Sequence[GradedGroup], parts: int = 4) -> list[Stretch]:
    """The run cut into `parts` stretches of consecutive steps (as equal as the steps allow), then the
    whole run. Trails without steps (veRL, `catrl serve`) are cut by row order instead."""
    steps = sorted({g.step for g in groups if g.step is not None})
    out = []
    if steps and parts > 1 and len(steps) >= parts:
        for chunk in step_chunks(steps, parts):
            out.append(stretch([g for g in groups if g.step in set(chunk)], f"steps {chunk[0]}-{chunk[-1]}"))
    elif not steps and parts > 1 and len(groups) >= parts:
        for k in range(parts):
            lo, hi = k * len(groups) // parts, (k + 1) * len(groups) // parts
            out.append(stretch(groups[lo:hi], f"rows {lo + 1}-{hi}"))
    out.append(stretch(groups))
    return out
