"""The control rewards of a CaT-RL study: what a run would gain from a reward that knows nothing.

Qwen2.5 models gain under GRPO even from random rewards (Spurious Rewards, arXiv 2506.10947:
+21.4 points on MATH-500 from Bernoulli(0.5)), so a CaT-RL gain means something only next to these
arms, trained with the same config, seeds and questions:

- RandomReward: each rollout 1 with probability p, else 0. The draw is a hash of (seed, the group's
  rollouts, the rollout's index), not a stream of a generator, so a resumed run draws exactly what
  an uninterrupted one would, and the same group always gets the same rewards.
- FormatReward: 1 for a rollout that commits to a final answer (catrl.verify.extract_answer), else 0:
  what a reward pays for format alone.

Both have CaTReward's interface (`score_groups(questions, groups)` -> RewardRecord per group), read
no question and no label, and call no model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from catrl.errors import InputError
from catrl.rewards import require_rollouts
from catrl.types import Reference, RewardRecord
from catrl.verify import extract_answer


def bernoulli(seed: int, rollouts: Sequence[str], index: int, p: float) -> bool:
    """A reproducible coin for one rollout of one group."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"random-reward:{seed}:{index}:".encode())
    for r in rollouts:
        h.update(hashlib.blake2b(r.encode("utf-8", "surrogatepass"), digest_size=16).digest())
    return int.from_bytes(h.digest(), "little") / 2**64 < p


class _Control:
    """The shared interface: a group in, a RewardRecord out (`_record`), no model call, no label."""

    last_seconds: dict[str, float]

    def __call__(self, question: str | None, rollouts: Sequence[str]) -> RewardRecord:
        return self.score_groups([question], [rollouts])[0]

    def score_groups(self, questions: Sequence[str | None], groups: Sequence[Sequence[str]]) -> list[RewardRecord]:
        require_rollouts(groups)
        self.last_seconds = {}
        return [self._record(g) for g in groups]

    def _record(self, rollouts: Sequence[str]) -> RewardRecord:
        raise NotImplementedError


@dataclass
class RandomReward(_Control):
    """Bernoulli(p) per rollout, independent of its text's correctness (the Spurious Rewards control)."""

    p: float = 0.5
    seed: int = 0
    name: ClassVar[str] = "random"
    last_seconds: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise InputError(f"random reward: p must be in [0, 1], got {self.p}")

    def _record(self, rollouts: Sequence[str]) -> RewardRecord:
        coins = [bernoulli(self.seed, rollouts, i, self.p) for i in range(len(rollouts))]
        ref = Reference(f"random reward: Bernoulli({self.p}), seed {self.seed}", None, prompt=[], finish_reason="random")
        return RewardRecord(rewards=[float(c) for c in coins], reference=ref, answers=[extract_answer(r) for r in rollouts],
                            matches=coins, rollout_flags=[[] for _ in rollouts], flags=["control:random"])


@dataclass
class FormatReward(_Control):
    """1 for a rollout that states a final answer, whatever it is (the format-only control)."""

    name: ClassVar[str] = "format"
    last_seconds: dict[str, float] = field(default_factory=dict, repr=False)

    def _record(self, rollouts: Sequence[str]) -> RewardRecord:
        answers = [extract_answer(r) for r in rollouts]
        ref = Reference("format reward: 1 for a stated final answer", None, prompt=[], finish_reason="format")
        return RewardRecord(rewards=[float(a is not None) for a in answers], reference=ref, answers=answers,
                            matches=[a is not None for a in answers],
                            rollout_flags=[[] if a is not None else ["no_answer"] for a in answers], flags=["control:format"])
