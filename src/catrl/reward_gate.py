"""The reward-accuracy gate: how often a label-free reward pays the right rollouts, before anything trains.

A CaT-RL run is only as good as its reward, and grading a reward costs no training: sample groups
from the initial policy on the training questions, score every group with each candidate reward,
and grade each rollout against gold afterwards (gold never reaches a reward). Per reward:

- precision: of the rewarded rollouts, the share that are right (what the policy is pushed towards);
- recall: of the right rollouts, the share that are rewarded;
- accuracy: the share of rollouts whose reward agrees with their correctness. TTRL (arXiv 2504.16084)
  shows why this, not only the label's accuracy, predicts learning: a wrong label still gives wrong
  rollouts 0, so the reward can be right per rollout while the label is wrong;
- label accuracy: the share of groups whose reference (or vote) is right (controls have none);
- signal: the share of groups whose rewards vary (GRPO learns nothing from a flat group), and of
  those, the share where the rewarded rollouts are right more often than the unrewarded ones
  (the advantage points the right way).

Pure functions over per-rollout rewards and correctness; `score_gate` is the one model-facing edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from catrl.types import RewardRecord
from catrl.verify import is_right

Progress = Callable[[int, int], None]  # (groups done, total)


@dataclass
class GateGroup:
    """One sampled group, graded: the rollouts' correctness against gold, and each reward's verdicts."""

    id: str
    gold: str | None
    answers: list[str | None]
    correct: list[bool]
    rewards: dict[str, list[float]] = field(default_factory=dict)  # reward name -> per rollout
    labels: dict[str, str | None] = field(default_factory=dict)  # reward name -> the reference's final answer
    label_right: dict[str, bool | None] = field(default_factory=dict)  # None: a control (no label)
    flags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RewardAccuracy:
    name: str
    groups: int
    rollouts: int
    right: int  # rollouts right against gold
    rewarded: int
    rewarded_right: int
    precision: float | None  # rewarded_right / rewarded
    recall: float | None  # rewarded_right / right
    accuracy: float  # rollouts whose reward agrees with their correctness
    label_accuracy: float | None  # groups whose label is right (None for controls)
    signal_groups: int  # groups whose rewards vary
    signal_right: int  # of those, groups where rewarded rollouts are right more often than the others

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def grade_group(gid: str, gold: str | None, answers: Sequence[str | None], match: str = "symbolic") -> GateGroup:
    """A group's rollouts graded against gold, for scoring only."""
    return GateGroup(gid, gold, list(answers), [is_right(gold, a, match) for a in answers])


def add_reward(group: GateGroup, name: str, record: RewardRecord, match: str = "symbolic") -> None:
    """One reward's verdicts on a graded group. A reward whose reference has an answer has a label;
    the controls (random, format) flag themselves `control:*` and have none."""
    group.rewards[name] = [float(r) for r in record.rewards]
    control = any(f.startswith("control:") for f in record.flags)
    label = None if control or record.reference is None else record.reference.answer
    group.labels[name] = label
    group.label_right[name] = None if control else is_right(group.gold, label, match)
    group.flags[name] = list(record.flags)


def reward_accuracy(groups: Sequence[GateGroup], name: str) -> RewardAccuracy:
    """Precision, recall and accuracy of one reward over graded groups (a reward counts as paid when > 0)."""
    rows = [g for g in groups if name in g.rewards]
    pairs = [(r > 0, c) for g in rows for r, c in zip(g.rewards[name], g.correct, strict=True)]
    right = sum(c for _, c in pairs)
    paid = sum(p for p, _ in pairs)
    paid_right = sum(p and c for p, c in pairs)
    labels = [g.label_right[name] for g in rows if g.label_right.get(name) is not None]
    signal = [g for g in rows if len(set(g.rewards[name])) > 1]
    return RewardAccuracy(
        name=name, groups=len(rows), rollouts=len(pairs), right=right, rewarded=paid, rewarded_right=paid_right,
        precision=paid_right / paid if paid else None, recall=paid_right / right if right else None,
        accuracy=sum(p == c for p, c in pairs) / len(pairs) if pairs else float("nan"),
        label_accuracy=sum(labels) / len(labels) if labels else None,
        signal_groups=len(signal), signal_right=sum(advantage_points_right(g.rewards[name], g.correct) for g in signal),
    )


def advantage_points_right(rewards: Sequence[float], correct: Sequence[bool]) -> bool:
    """Whether the rollouts a group rewards are right more often than those it does not (the direction
    GRPO's group-normalised advantage pushes)."""
    paid = [c for r, c in zip(rewards, correct, strict=True) if r > 0]
    unpaid = [c for r, c in zip(rewards, correct, strict=True) if r <= 0]
    return bool(paid and unpaid) and sum(paid) / len(paid) > sum(unpaid) / len(unpaid)


def score_gate(groups: Sequence[GateGroup], rollouts: Sequence[Sequence[str]], name: str, reward: Any,
               match: str = "symbolic", chunk: int = 4, progress: Progress | None = None) -> None:
    """Score every group with one reward (anything with CaTReward's `score_groups`), `chunk` groups
    per call so a cached engine keeps what finished and a progress bar moves."""
    for start in range(0, len(groups), chunk):
        part = list(range(start, min(start + chunk, len(groups))))
        records = reward.score_groups([None] * len(part), [rollouts[i] for i in part])
        for i, rec in zip(part, records, strict=True):
            add_reward(groups[i], name, rec, match)
        if progress:
            progress(part[-1] + 1, len(groups))
