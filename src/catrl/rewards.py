"""CaTReward: one group (question, G rollouts) in, G rewards plus an audit record out.

Verifiable half: the anchor synthesizes a reference from the rollouts alone; a rollout earns 1 when
its final answer is equivalent to the reference's, else 0. Defined outcomes instead of exceptions
inside a reward: a reference with no extractable answer gives every rollout 0 and the group flag
`no_reference_answer`; a rollout with no answer gets 0 and `no_answer`; an equivalence check that
times out gets 0 and `verify_timeout`. An empty group is the caller's bug: InputError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.synthesis import synthesize_many
from catrl.types import Reference, RewardRecord, Sampling
from catrl.verify import DEFAULT_TIMEOUT_S, equivalent, extract_answer


def verifiable_rewards(reference: Reference, rollouts: Sequence[str], mode: str = "symbolic", timeout_s: float = DEFAULT_TIMEOUT_S) -> RewardRecord:
    """Pure scoring of rollouts against a reference (no model call)."""
    answers = [extract_answer(r) for r in rollouts]
    rec = RewardRecord(rewards=[0.0] * len(rollouts), reference=reference, answers=answers,
                       matches=[False] * len(rollouts), rollout_flags=[[] for _ in rollouts])
    if reference.answer is None:
        rec.flags.append("no_reference_answer")
        return rec
    for i, ans in enumerate(answers):
        if ans is None:
            rec.rollout_flags[i].append("no_answer")
            continue
        check = equivalent(reference.answer, ans, mode=mode, timeout_s=timeout_s)
        if check.flag:
            rec.rollout_flags[i].append(f"verify_{check.flag}")
        rec.matches[i] = check.equal
        rec.rewards[i] = 1.0 if check.equal else 0.0
    return rec


@dataclass
class CaTReward:
    """The CaT reward for verifiable tasks. `anchor` is the frozen pi_0, never the training weights."""

    anchor: Engine
    match: str = "symbolic"  # or "string": the paper's plain boxed-answer match
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=1024))
    include_question: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __call__(self, question: str | None, rollouts: Sequence[str]) -> RewardRecord:
        return self.score_groups([question], [rollouts])[0]

    def score_groups(self, questions: Sequence[str | None], groups: Sequence[Sequence[str]]) -> list[RewardRecord]:
        """Many groups at once: one batched anchor call, then pure verification per group."""
        for i, g in enumerate(groups):
            if len(g) == 0:
                raise InputError(f"group {i}: empty group of rollouts; CaT needs at least one rollout")
        if self.include_question and any(q is None for q in questions):
            raise InputError("include_question=True needs every group's question")
        qs = list(questions) if self.include_question else None
        refs = synthesize_many(self.anchor, groups, "reasoning", self.sampling, questions=qs)
        return [verifiable_rewards(ref, g, self.match, self.timeout_s) for ref, g in zip(refs, groups, strict=True)]
