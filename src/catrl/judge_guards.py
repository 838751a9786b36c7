"""The judge's guards, as a plan: which (conversation, response, rubric) items to judge for one group,
and how their verdicts combine into the group's verdicts.

- a degenerate response (guards.degenerate_reason) or one screening left out of the anchor's prompt
  is not judged: every criterion is not met, flag `degenerate:<why>` / `excluded:<why>`;
- a response with grader-directed sentences is judged twice, as written and without them; a
  criterion is met only when both say so (counterfactual judging, flag `counterfactual:<k>` when k
  verdicts were lowered, `grader_directed` whenever such text was found);
- the empty response is judged once per rubric; criteria it "meets" are dropped from the score (flag
  `criteria_met_by_empty:<k>`): they reward saying nothing.

Pure: the judge is called once for every group's items together (rewards.RubricReward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from catrl.guards import Guards, degenerate_reason, grader_directed_spans, strip_grader_directed
from catrl.types import Message, Reference, Rubric, Verdict

Conversation = str | Sequence[Message]
Item = tuple[Conversation, str, Rubric]


@dataclass
class JudgingPlan:
    """For one group: the items to judge, and for each response which items are its own."""

    items: list[Item] = field(default_factory=list)
    own: list[int | None] = field(default_factory=list)         # per response: its item, None when not judged
    counterfactual: list[int | None] = field(default_factory=list)  # per response: the item without grader-directed text
    skipped: list[str | None] = field(default_factory=list)     # per response: why it was not judged
    directed: list[bool] = field(default_factory=list)
    probe: int | None = None                                     # the empty response's item

    def resolve(self, verdicts: Sequence[list[Verdict]], n_criteria: int) -> tuple[list[list[Verdict]], list[int], list[list[str]], list[str]]:
        """(per-response verdicts, dropped criteria, per-response flags, group flags) from the items' verdicts."""
        out, flags = [], []
        for own, cf, skip, directed in zip(self.own, self.counterfactual, self.skipped, self.directed, strict=True):
            f: list[str] = []
            if own is None:
                out.append([Verdict(False, "", skip) for _ in range(n_criteria)])
                flags.append([skip] if skip else [])
                continue
            vs = list(verdicts[own])
            if directed:
                f.append("grader_directed")
            if cf is not None:
                lowered = 0
                for j, (a, b) in enumerate(zip(vs, verdicts[cf], strict=True)):
                    if a.met and b.met is not True:
                        vs[j] = Verdict(False, b.reason, "counterfactual")
                        lowered += 1
                if lowered:
                    f.append(f"counterfactual:{lowered}")
            out.append(vs)
            flags.append(f)
        dropped = [j for j, v in enumerate(verdicts[self.probe]) if v.met] if self.probe is not None else []
        group_flags = [f"criteria_met_by_empty:{len(dropped)}"] if dropped else []
        return out, dropped, flags, group_flags


def plan_judging(conversation: Conversation, responses: Sequence[str], rubric: Rubric, reference: Reference | None,
                 guards: Guards) -> JudgingPlan:
    """What to judge for one group under `guards` (no guard: every response once, as the paper)."""
    plan = JudgingPlan()
    excluded = reference.excluded if reference is not None else {}
    for i, r in enumerate(responses):
        why = None
        if guards.screen and i in excluded:
            why = f"excluded:{excluded[i]}"
        elif guards.degenerate and (d := degenerate_reason(r)):
            why = f"degenerate:{d}"
        directed = bool(grader_directed_spans(r)) if why is None and guards.counterfactual else False
        plan.skipped.append(why)
        plan.directed.append(directed)
        plan.own.append(_add(plan, (conversation, r, rubric)) if why is None else None)
        plan.counterfactual.append(_add(plan, (conversation, strip_grader_directed(r), rubric)) if directed and rubric.criteria else None)
    if guards.empty_probe and rubric.criteria:
        plan.probe = _add(plan, (conversation, "", rubric))
    return plan


def _add(plan: JudgingPlan, item: Item) -> int:
    plan.items.append(item)
    return len(plan.items) - 1
