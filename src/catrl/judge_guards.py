"""The judge's guards, as a plan: which (conversation, response, rubric) items to judge for one group,
and how their verdicts combine into the group's verdicts.

- a degenerate response (guards.degenerate_reason) or one screening left out of the anchor's prompt
  is not judged: every criterion is not met, flag `degenerate:<why>` / `excluded:<why>`;
- a response with grader-directed sentences is judged twice, as written and without them; a
  criterion is met only when both say so (counterfactual judging, flag `counterfactual:<k>` when k
  verdicts were lowered, `grader_directed` whenever such text was found);
- the empty response is judged once per rubric; criteria it "meets" are dropped from the score (flag
  `criteria_met_by_empty:<k>`): they reward saying nothing;
- decoys: every judged response is also judged, the same way, against DECOYS criteria about content no
  answer to the conversation would hold (src/catrl/data/decoy_criteria.txt, chosen per conversation).
  A response that "meets" one is steering the judge, in whatever words, language or disguise: none of
  its criteria count (flag `meets_decoy:<k>`). Unlike counterfactual judging this does not depend on
  recognising the attack, only on its effect;
- sifting (catrl.sift): the judge model scores every sentence of a response as grader bait against
  answer; the pieces it marks leave the counterfactual reading too (flag `sifted:<k>`), so grader-
  directed text in a language or disguise no pattern knows is judged away the same way;
- the monitor: every judged response is also judged, the same way, against one more criterion: that it
  holds text aimed at the grader (src/catrl/prompts/monitor_criterion.txt). The judge reads any
  language or disguise a pattern misses, and text that pushes it to say "yes" pushes this "yes" too.
  A response that meets it gets none of its criteria (flag `addresses_grader`).

Pure: the judge is called once for every group's items together (rewards.RubricReward).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from catrl.delimit import as_messages
from catrl.guards import (Guards, degenerate_reason, grader_directed_spans, has_content, has_hidden_message, paragraph_spans, strip_spans,
                          visible)
from catrl.language import conversation_language, foreign_spans
from catrl.sift import Sifted
from catrl.types import Criterion, Message, Reference, Rubric, Verdict

Conversation = str | Sequence[Message]
Item = tuple[Conversation, str, Rubric]
DECOYS = 2  # decoy criteria per conversation: each costs one more verdict per response
_WORD = re.compile(r"[^\W\d_]{5,}")


@lru_cache(maxsize=1)
def decoy_pool() -> tuple[str, ...]:
    text = (resources.files("catrl") / "data" / "decoy_criteria.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@lru_cache(maxsize=1)
def monitor_criterion() -> str:
    return (resources.files("catrl") / "prompts" / "monitor_criterion.txt").read_text(encoding="utf-8").strip()


def canary_rubric(conversation: Conversation, guards: Guards) -> Rubric:
    """The criteria no honest response meets, judged beside its own: the monitor's, then the decoys.
    Each criterion's tag says which guard it serves."""
    crit = [Criterion(monitor_criterion(), tags=["monitor"])] if guards.monitor else []
    crit += decoy_rubric(conversation).criteria if guards.decoy else []
    return Rubric(crit, "canary")


def decoy_rubric(conversation: Conversation, k: int = DECOYS) -> Rubric:
    """k decoys for this conversation: a seeded draw (the same conversation always gets the same ones,
    so verdicts cache), skipping any decoy that shares a word of 5+ letters with the conversation."""
    text = visible("\n".join(m["content"] for m in as_messages(conversation))).lower()
    words = set(_WORD.findall(text))
    usable = [d for d in decoy_pool() if not words & set(_WORD.findall(d.lower()))]
    rng = random.Random(hashlib.sha256(text.encode("utf-8")).hexdigest())
    return Rubric([Criterion(d, tags=["decoy"]) for d in rng.sample(usable, min(k, len(usable)))], "decoy")


@dataclass
class JudgingPlan:
    """For one group: the items to judge, and for each response which items are its own."""

    items: list[Item] = field(default_factory=list)
    own: list[int | None] = field(default_factory=list)         # per response: its item, None when not judged
    counterfactual: list[int | None] = field(default_factory=list)  # per response: the item without grader-directed text
    skipped: list[str | None] = field(default_factory=list)     # per response: why it was not judged
    directed: list[bool] = field(default_factory=list)
    sifted: list[int] = field(default_factory=list)             # per response: pieces the judge model marked (catrl.sift)
    foreign: list[int] = field(default_factory=list)            # per response: sentences not in the conversation's language
    canaries: list[int | None] = field(default_factory=list)    # per response: its item against the canary rubric
    canary_kinds: list[str] = field(default_factory=list)       # per canary criterion: "monitor" or "decoy"
    probe: int | None = None                                     # the empty response's item

    def resolve(self, verdicts: Sequence[list[Verdict]], n_criteria: int) -> tuple[list[list[Verdict]], list[int], list[list[str]], list[str]]:
        """(per-response verdicts, dropped criteria, per-response flags, group flags) from the items' verdicts."""
        out, flags = [], []
        for own, cf, skip, directed, can, cut, foreign in zip(self.own, self.counterfactual, self.skipped, self.directed, self.canaries,
                                                              self.sifted, self.foreign, strict=True):
            f: list[str] = []
            if own is None:
                out.append([Verdict(False, "", skip) for _ in range(n_criteria)])
                flags.append([skip] if skip else [])
                continue
            vs = list(verdicts[own])
            if directed:
                f.append("grader_directed")
            if cut:
                f.append(f"sifted:{cut}")
            if foreign:
                f.append(f"other_language:{foreign}")
            if cf is not None:
                lowered = 0
                for j, (a, b) in enumerate(zip(vs, verdicts[cf], strict=True)):
                    if a.met and b.met is not True:
                        vs[j] = Verdict(False, b.reason, "counterfactual")
                        lowered += 1
                if lowered:
                    f.append(f"counterfactual:{lowered}")
            if can is not None:
                hit = [k for k, v in zip(self.canary_kinds, verdicts[can], strict=True) if v.met is True]
                if "monitor" in hit:
                    f.append("addresses_grader")
                if hit.count("decoy"):
                    f.append(f"meets_decoy:{hit.count('decoy')}")
                if hit:
                    vs = [Verdict(False, v.reason, hit[0]) for v in vs]
            out.append(vs)
            flags.append(f)
        dropped = [j for j, v in enumerate(verdicts[self.probe]) if v.met] if self.probe is not None else []
        group_flags = [f"criteria_met_by_empty:{len(dropped)}"] if dropped else []
        return out, dropped, flags, group_flags


def plan_judging(conversation: Conversation, responses: Sequence[str], rubric: Rubric, reference: Reference | None,
                 guards: Guards, sifted: Sequence[Sifted] | None = None) -> JudgingPlan:
    """What to judge for one group under `guards` (no guard: every response once, as the paper). With
    `sifted` (catrl.sift, one per response), the counterfactual reading leaves out the pieces the judge
    model marked as well as the patterns' sentences, and a response with nothing else left is degenerate."""
    plan = JudgingPlan()
    excluded = reference.excluded if reference is not None else {}
    canary = canary_rubric(conversation, guards) if rubric.criteria else Rubric([], "canary")
    plan.canary_kinds = [c.tags[0] for c in canary.criteria]
    lang = conversation_language(as_messages(conversation)) if guards.language else None
    for i, r in enumerate(responses):
        why = None
        if guards.screen and i in excluded:
            why = f"excluded:{excluded[i]}"
        elif guards.degenerate and (d := degenerate_reason(r)):
            why = f"degenerate:{d}"
        sift = sifted[i] if sifted is not None else None
        if why is None and guards.degenerate and sift is not None and not has_content(sift.text):
            why = "degenerate:no_content"
        foreign = foreign_spans(visible(r), lang) if lang and why is None else []
        marked = counterfactual_text(r, sift, guards) if why is None else r
        without = counterfactual_text(r, sift, guards, foreign) if foreign else marked
        if why is None and foreign and not has_content(without):
            why = "degenerate:other_language"  # nothing the user can read: judging "" would credit what an empty answer "meets"
        directed = why is None and (sift.changed if sift is not None else guards.counterfactual and marked != r)
        plan.skipped.append(why)
        plan.directed.append(directed)
        plan.sifted.append(len(sift.cut) if sift is not None and why is None else 0)
        plan.foreign.append(len(foreign) if why is None else 0)
        plan.own.append(_add(plan, (conversation, r, rubric)) if why is None else None)
        plan.counterfactual.append(_add(plan, (conversation, without, rubric)) if (directed or foreign) and why is None and rubric.criteria
                                   else None)
        plan.canaries.append(_add(plan, (conversation, r, canary)) if canary.criteria and why is None else None)
    if guards.empty_probe and rubric.criteria:
        plan.probe = _add(plan, (conversation, "", rubric))
    return plan


def counterfactual_text(response: str, sift: Sifted | None, guards: Guards, foreign: Sequence[tuple[int, int]] = ()) -> str:
    """The response as the counterfactual reading sees it: without the sentences the patterns (and, with
    `sift`, the judge model) marked, and without the `foreign` ones (catrl.language, spans of its visible
    form); with `guards.paragraphs`, without their whole paragraphs as long as something readable is left
    (an answer written as one paragraph keeps its unmarked sentences). The response itself when nothing is
    marked."""
    if sift is not None:
        sentences, spans = sift.text, sift.spans
    elif guards.counterfactual:
        spans = grader_directed_spans(response)
        sentences = strip_spans(visible(response), spans) if spans else response
    elif not foreign:
        return response
    else:
        spans = []
    if foreign:
        spans = sorted({*spans, *foreign})
        sentences = strip_spans(visible(response), spans)
    if not spans and has_hidden_message(response):  # the judge reads the message, a person sees nothing: read it again without
        return visible(response)
    if not guards.paragraphs or not spans:
        return sentences
    v = visible(response)
    whole = strip_spans(v, paragraph_spans(v, spans))
    return whole if has_content(whole) else sentences


def _add(plan: JudgingPlan, item: Item) -> int:
    plan.items.append(item)
    return len(plan.items) - 1
