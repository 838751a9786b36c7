"""CaTReward: one group (question, G rollouts) in, G rewards plus an audit record out.

Verifiable half: the anchor synthesizes a reference from the rollouts alone; a rollout earns 1 when
its final answer is equivalent to the reference's, else 0. Defined outcomes instead of exceptions
inside a reward: a reference with no extractable answer gives every rollout 0 and the group flag
`no_reference_answer`; a rollout with no answer gets 0 and `no_answer`; an equivalence check that
times out gets 0 and `verify_timeout`. An empty group is the caller's bug: InputError. In RL runs
(TRL, veRL) an anchor call that fails gives its groups 0 and `anchor_error` (AnchorFailures).

Corroboration (`min_support`, 1 = the paper's): a rollout is paid only when at least `min_support`
rollouts of its group reach the reference's answer. With 2, one rollout can never be paid for being
the only one that talked the anchor (or the vote) into its answer: it gets 0 and `uncorroborated`.
That is what a planted answer or text addressed to the anchor has to achieve, and it is also the
small anchor's commonest error (siding with a lone candidate, docs/reference_estimators).

MajorityReward is TTRL's reward, the paper's closest relative and a baseline: the rollouts' majority
answer is the pseudo-label, with no anchor, so a run with it tells what synthesis adds over a vote.

Free-form half (RubricReward): reference -> rubric -> judge verdicts -> fraction of criteria met;
an empty rubric (the anchor never produced one) gives every rollout 0 with the rubric's flags.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from catrl.engines.base import Engine, require_scoring
from catrl.estimators import Estimator, check_estimator
from catrl.errors import EngineError, InputError
from catrl.guards import Guards, degenerate_reason
from catrl.judge_guards import plan_judging
from catrl.judging import judge_many
from catrl.rubrics import propose_rubrics
from catrl.selection import majority_of_answers
from catrl.sift import JUDGE, Sifted, sift_groups
from catrl.synthesis import reference_flags, synthesize_many
from catrl.types import Message, Reference, RewardRecord, Rubric, Sampling, Verdict
from catrl.verify import DEFAULT_TIMEOUT_S, equivalent, extract_answer

log = logging.getLogger(__name__)


def failed_group(rollouts: Sequence[str], error: BaseException) -> RewardRecord:
    """The defined outcome for a group whose anchor (or judge) call failed: every rollout 0, the group
    flagged `anchor_error`, the error kept in the record. Used where a run must go on (an RL step)."""
    return RewardRecord(rewards=[0.0] * len(rollouts), reference=None, answers=[extract_answer(r) for r in rollouts],
                        matches=[False] * len(rollouts), rollout_flags=[[] for _ in rollouts],
                        flags=["anchor_error", f"{type(error).__name__}: {error}"[:500]])


@dataclass
class AnchorFailures:
    """How an RL integration lives with a failing anchor (or judge): a failed call gives its groups
    `failed_group` records (reward 0, no gradient, the run goes on); `limit` failed calls in a row
    re-raise, so a dead server stops the run (to resume from its checkpoint) instead of wasting it."""

    limit: int = 3
    in_a_row: int = 0

    def score(self, call: Callable[[], list[RewardRecord]], groups: Sequence[Sequence[str]]) -> list[RewardRecord]:
        try:
            records = call()
        except EngineError as e:
            self.in_a_row += 1
            if self.in_a_row >= self.limit:
                raise EngineError(f"{self.in_a_row} reward calls in a row failed (resume from the last checkpoint once "
                                  f"the anchor is back); last error: {e}") from e
            log.warning("anchor call failed (%d in a row); %d groups get reward 0: %s", self.in_a_row, len(groups), e)
            return [failed_group(g, e) for g in groups]
        self.in_a_row = 0
        return records


def require_rollouts(groups: Sequence[Sequence[str]]) -> None:
    """An empty group is the caller's bug, in every reward: say which group."""
    for i, g in enumerate(groups):
        if len(g) == 0:
            raise InputError(f"group {i}: empty group of rollouts; a reward needs at least one rollout")


def verifiable_rewards(reference: Reference, rollouts: Sequence[str], mode: str = "symbolic", timeout_s: float = DEFAULT_TIMEOUT_S,
                       min_support: int = 1) -> RewardRecord:
    """Pure scoring of rollouts against a reference (no model call), then `corroborate`."""
    answers = [extract_answer(r) for r in rollouts]
    rec = RewardRecord(rewards=[0.0] * len(rollouts), reference=reference, answers=answers,
                       matches=[False] * len(rollouts), rollout_flags=[[] for _ in rollouts],
                       flags=reference_flags(reference) + list(reference.flags))
    if reference.answer is None:
        rec.flags.append("no_reference_answer")
        return rec
    for i, ans in enumerate(answers):
        if i in reference.excluded:  # screening left it out of the anchor's prompt (catrl.screening)
            rec.rollout_flags[i].append(f"excluded:{reference.excluded[i]}")
            continue
        if ans is None:
            rec.rollout_flags[i].append("no_answer")
            continue
        check = equivalent(reference.answer, ans, mode=mode, timeout_s=timeout_s)
        if check.flag:
            rec.rollout_flags[i].append(f"verify_{check.flag}")
        rec.matches[i] = check.equal
        rec.rewards[i] = 1.0 if check.equal else 0.0
    return corroborate(rec, min_support)


def check_min_support(min_support: int, g: int | None = None) -> int:
    """1 (the paper's: no corroboration) up to the group size."""
    if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1 or (g is not None and min_support > g):
        raise InputError(f"min_support must be an integer from 1 to the group size{f' ({g})' if g is not None else ''}, got {min_support!r}")
    return min_support


def corroborated(rewards: Sequence[float], min_support: int) -> tuple[list[float], str | None]:
    """The rewards under corroboration, and the group flag when it took pay away: all 0 when some rollouts
    were paid but fewer than `min_support` (`uncorroborated:<paid><<min_support>`)."""
    paid = sum(r > 0 for r in rewards)
    if 0 < paid < min_support:
        return [0.0] * len(rewards), f"uncorroborated:{paid}<{min_support}"
    return list(rewards), None


def corroborate(rec: RewardRecord, min_support: int) -> RewardRecord:
    """`corroborated` on a record, in place: each rollout whose pay it took gets the flag `uncorroborated`. A
    group smaller than `min_support` can never be paid, and says so (`group_smaller_than_min_support`)."""
    rewards, flag = corroborated(rec.rewards, min_support)
    if flag:
        for i, r in enumerate(rec.rewards):
            if r > 0:
                rec.rollout_flags[i].append("uncorroborated")
        rec.rewards = rewards
        rec.flags.append(flag)
    if len(rec.rewards) < min_support:
        rec.flags.append("group_smaller_than_min_support")
    return rec


@dataclass
class CaTReward:
    """The CaT reward for verifiable tasks. `anchor` is the frozen pi_0, never the training weights."""

    anchor: Engine
    match: str = "symbolic"  # or "string": the paper's plain boxed-answer match
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=1024))
    include_question: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    estimator: Estimator | str | None = None  # catrl.estimators spec; None: the paper's synthesis
    min_support: int = 1  # rollouts that must reach the reference's answer for any to be paid (1: the paper's)
    last_seconds: dict[str, float] = field(default_factory=dict, repr=False)  # of the last score_groups call

    def __post_init__(self):
        self.estimator = check_estimator(self.estimator, mode="reasoning", match=self.match)
        check_min_support(self.min_support)
        if self.include_question and self.estimator.name != "synthesis":
            raise InputError(f"include_question=True is the paper's synthesis ablation; estimator {self.estimator.name!r} never sees the question")
        if self.estimator.needs_scoring:
            require_scoring(self.anchor)  # said once, here, instead of an anchor_error on every group

    def __call__(self, question: str | None, rollouts: Sequence[str]) -> RewardRecord:
        return self.score_groups([question], [rollouts])[0]

    def score_groups(self, questions: Sequence[str | None], groups: Sequence[Sequence[str]]) -> list[RewardRecord]:
        """Many groups at once: one batched anchor call, then pure verification per group."""
        require_rollouts(groups)
        if self.include_question and any(q is None for q in questions):
            raise InputError("include_question=True needs every group's question")
        qs = list(questions) if self.include_question else None
        t0 = time.perf_counter()
        if qs is not None:
            refs = synthesize_many(self.anchor, groups, "reasoning", self.sampling, questions=qs)
        else:
            refs = self.estimator.estimate_many(self.anchor, groups, "reasoning", self.sampling)
        t1 = time.perf_counter()
        out = [verifiable_rewards(ref, g, self.match, self.timeout_s, self.min_support) for ref, g in zip(refs, groups, strict=True)]
        self.last_seconds = {"synthesis": t1 - t0, "verify": time.perf_counter() - t1}
        return out


@dataclass
class MajorityReward:
    """TTRL's majority-vote reward on the same interface as CaTReward: no model call at all."""

    match: str = "symbolic"
    timeout_s: float = DEFAULT_TIMEOUT_S
    min_support: int = 1  # as CaTReward's: 2 leaves a group whose answers are all different unpaid
    last_seconds: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        check_min_support(self.min_support)

    def __call__(self, question: str | None, rollouts: Sequence[str]) -> RewardRecord:
        return self.score_groups([question], [rollouts])[0]

    def score_groups(self, questions: Sequence[str | None], groups: Sequence[Sequence[str]]) -> list[RewardRecord]:
        """The majority answer of each group as its reference (ties to the answer seen first), then verification."""
        t0 = time.perf_counter()
        require_rollouts(groups)
        out = []
        for g in groups:
            maj = majority_of_answers([extract_answer(r) for r in g], self.match)
            text = f"majority vote: {maj.answer} ({maj.detail.get('votes', 0)}/{len(g)} rollouts)"
            out.append(verifiable_rewards(Reference(text, maj.answer, prompt=[], finish_reason="majority"), g, self.match, self.timeout_s,
                                          self.min_support))
        self.last_seconds = {"verify": time.perf_counter() - t0}
        return out


# -- free-form half ------------------------------------------------------------------------------
def rubric_rewards(
    reference: Reference | None, rubric: Rubric, verdicts: Sequence[Sequence[Verdict]], *, weighted: bool = False,
    lengths: Sequence[int | None] | None = None, length_limit: int | None = 750, length_penalty: float = -1.0,
    dropped: Sequence[int] = (),
) -> RewardRecord:
    """Pure scoring: per rollout, the fraction of criteria met (the paper's), or with weighted=True the
    points met over the positive points; plus `length_penalty` for a rollout over `length_limit` tokens.
    A criterion the judge gave no parseable verdict on counts as not met (flag `unjudged`). Criteria in
    `dropped` (those an empty response meets: guards) count in neither the numerator nor the denominator."""
    n = len(verdicts)
    rec = RewardRecord(rewards=[0.0] * n, reference=reference, rollout_flags=[[] for _ in range(n)],
                       flags=list(rubric.flags), rubric=rubric, verdicts=[list(v) for v in verdicts])
    if not rubric.criteria:
        rec.flags.append("empty_rubric")
    live = [j for j in range(len(rubric.criteria)) if j not in set(dropped)]
    if rubric.criteria and not live:
        rec.flags.append("all_criteria_met_by_empty")
    crit = rubric.criteria
    positive = sum(crit[j].points for j in live if crit[j].points > 0) if weighted else len(live)
    for i, vs in enumerate(verdicts):
        if live and positive > 0:
            met = sum((crit[j].points if weighted else 1.0) for j in live if vs[j].met)
            rec.rewards[i] = met / positive
        if any(v.met is None for v in vs):
            rec.rollout_flags[i].append("unjudged")
        if length_limit is not None and lengths is not None:
            if lengths[i] is None:
                rec.rollout_flags[i].append("length_unchecked")
            elif lengths[i] > length_limit:
                rec.rewards[i] += length_penalty
                rec.rollout_flags[i].append("over_length")
    return rec


@dataclass
class RubricReward:
    """The CaT reward for free-form tasks: the anchor synthesizes a reference from the rollouts alone,
    writes a rubric from it, and a separate judge checks every rollout against every criterion.

    `rubric_from="question"` builds the rubric from the conversation instead (the paper's ablation;
    the anchor then does see the conversation). Lengths for the penalty come from the caller (TRL
    knows the completion token counts), else from `count_tokens`, else the anchor's tokenizer."""

    anchor: Engine
    judge: Engine
    judge_mode: str = "per_criterion"  # the paper's; "batched" is cheaper but lost validity with a 1.5B judge
    rubric_from: str = "reference"
    min_criteria: int = 5
    max_criteria: int = 20
    weighted: bool = False
    length_limit: int | None = 750
    length_penalty: float = -1.0
    count_tokens: Callable[[str], int] | None = None
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=1024))
    estimator: Estimator | str | None = None  # catrl.estimators spec (free-form: synthesis, permutation, recursive)
    guards: Guards | str | None = None  # catrl.guards: which run (default: all but the empty probe; "all", "none", a list)
    last_seconds: dict[str, float] = field(default_factory=dict, repr=False)  # of the last score_groups call

    def __post_init__(self):
        self.estimator = check_estimator(self.estimator, mode="freeform")
        self.guards = Guards.parse(self.guards)
        if self.guards.sift and self.judge is not None:
            require_scoring(self.judge)  # asked for by name: refused before any group, not skipped

    def _sift(self, groups: Sequence[Sequence[str]], refs: Sequence[Reference | None]) -> list[list[Sifted]] | None:
        """Every response the judge will read, sifted by the judge in one scoring pass (None: guard off).
        Responses the other guards already give 0 (screened out, degenerate) are not read: no scoring."""
        if not self.guards.sifts(self.judge.supports_scoring):
            return None

        def read(gi: int, i: int, r: str) -> bool:
            screened = self.guards.screen and refs[gi] is not None and i in refs[gi].excluded
            return not screened and not (self.guards.degenerate and degenerate_reason(r) is not None)
        return sift_groups(self.judge, groups, JUDGE, read)

    def __call__(self, conversation: str | Sequence[Message], rollouts: Sequence[str]) -> RewardRecord:
        return self.score_groups([conversation], [rollouts])[0]

    def score_groups(
        self, conversations: Sequence[str | Sequence[Message]], groups: Sequence[Sequence[str]],
        lengths: Sequence[Sequence[int | None]] | None = None,
    ) -> list[RewardRecord]:
        if self.rubric_from not in ("reference", "question"):
            raise InputError(f"rubric_from must be 'reference' or 'question', got {self.rubric_from!r}")
        require_rollouts(groups)
        t0 = time.perf_counter()
        refs = self.estimator.estimate_many(self.anchor, groups, "freeform", self.sampling)
        t1 = time.perf_counter()
        from_q = self.rubric_from == "question"
        rubrics = propose_rubrics(
            self.anchor, [r.text for r in refs], conversations, from_question=from_q,
            min_criteria=self.min_criteria, max_criteria=self.max_criteria, sampling=self.sampling,
        )
        t2 = time.perf_counter()
        out = self.score_with_rubrics(conversations, groups, refs, rubrics, lengths)
        self.last_seconds = {"synthesis": t1 - t0, "rubric": t2 - t1, "verify": time.perf_counter() - t2}
        return out

    def score_with_rubrics(
        self, conversations: Sequence[str | Sequence[Message]], groups: Sequence[Sequence[str]], refs: Sequence[Reference | None],
        rubrics: Sequence[Rubric], lengths: Sequence[Sequence[int | None]] | None = None,
    ) -> list[RewardRecord]:
        """The judging half on given rubrics (any source): the guards' plan, one judge call, the scores."""
        sifted = self._sift(groups, refs)
        plans = [plan_judging(conv, g, rub, ref, self.guards, sifted[gi] if sifted else None)
                 for gi, (conv, g, rub, ref) in enumerate(zip(conversations, groups, rubrics, refs, strict=True))]
        flat = iter(judge_many(self.judge, [it for p in plans for it in p.items], self.judge_mode))
        out = []
        for gi, (ref, rub, g, plan) in enumerate(zip(refs, rubrics, groups, plans, strict=True)):
            verdicts, dropped, rollout_flags, flags = plan.resolve([next(flat) for _ in plan.items], len(rub.criteria))
            lens = list(lengths[gi]) if lengths is not None else self._lengths(g)
            rec = rubric_rewards(ref, rub, verdicts, weighted=self.weighted, lengths=lens,
                                 length_limit=self.length_limit, length_penalty=self.length_penalty, dropped=dropped)
            rec.flags += (reference_flags(ref) + list(ref.flags) if ref is not None else []) + flags
            if self.guards.sift is None and not self.judge.supports_scoring:
                rec.flags.append("sift_unavailable")  # the default guard this judge cannot run: said, not skipped silently
            for i, f in enumerate(rollout_flags):
                rec.rollout_flags[i] = f + rec.rollout_flags[i]
            out.append(rec)
        return out

    def _lengths(self, rollouts: Sequence[str]) -> list[int | None] | None:
        if self.length_limit is None:
            return None
        count = self.count_tokens or getattr(self.anchor, "count_tokens", None)
        if count is None:
            return [None] * len(rollouts)
        return [count(r) for r in rollouts]
