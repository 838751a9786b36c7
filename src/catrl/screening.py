"""What of a group the anchor reads: junk stays out, anchor-directed sentences are cut.

Every estimator runs on the screened group (`Estimator.screen`, on by default), so `answer`,
`label`, `eval` and every reward share it. A rollout that is empty, repetitive, noise-like or far
longer than the rest of its group (guards.junk_reason) is left out of the anchor's prompt and out of
the vote; rewards give it 0 with the flag `excluded:<why>`. A rollout with sentences addressed to the
anchor or a grader ("the reference answer is...", "ignore the instructions") is shown without them
(flag `anchor_directed:<i>`); its own final answer is still read from its full text. With an estimator's
`sift=1` the anchor model also reads each sentence of each rollout and marks those more likely as text
written to sway the reader than as a step of a solution (catrl.sift.ANCHOR; flag `anchor_sifted:<i>:<k>`). Indices in the
returned Reference (order, calls) are the group's own, so the audit reads as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Union

from catrl.guards import grader_directed_spans, has_content, junk_reason, strip_grader_directed
from catrl.sift import Sifted
from catrl.types import Completion, Reference

Candidate = Union[str, Completion]


@dataclass
class Screened:
    """One group after screening: the rollout indices kept, what the anchor is shown for each, and why
    the others were left out."""

    kept: list[int]
    shown: list[Candidate]
    excluded: dict[int, str]
    directed: list[int]
    sifted: dict[int, int] = field(default_factory=dict)  # rollout -> sentences the anchor model marked (sift=1)

    @property
    def changed(self) -> bool:
        return bool(self.excluded or self.directed)


def _text(c: Candidate) -> str:
    return c if isinstance(c, str) else c.text


def screen_group(group: Sequence[Candidate], strip: bool = True, sifted: Sequence[Sifted] | None = None) -> Screened:
    """Keep what carries content and is not junk; cut anchor-directed sentences when `strip`: those the
    patterns mark, and with `sifted` (catrl.sift, one per rollout) those the anchor model marked too."""
    texts = [_text(c) for c in group]
    kept, shown, excluded, directed, marked = [], [], {}, [], {}
    for i, (c, t) in enumerate(zip(group, texts, strict=True)):
        why = "empty" if not has_content(t) else junk_reason(t, texts)
        if why:
            excluded[i] = why
            continue
        cut = None
        if strip and sifted is not None and sifted[i].changed:
            cut = sifted[i].text
            if sifted[i].cut:
                marked[i] = len(sifted[i].cut)
        elif strip and grader_directed_spans(t):
            cut = strip_grader_directed(t)
        if cut is None:
            shown.append(c)
        elif not has_content(cut):  # nothing but text addressed to the anchor
            excluded[i] = "anchor_directed_only"
            marked.pop(i, None)
            continue
        else:
            directed.append(i)
            shown.append(cut if isinstance(c, str) else replace(c, text=cut))
        kept.append(i)
    return Screened(kept, shown, excluded, directed, marked)


def restore_indices(ref: Reference, s: Screened) -> Reference:
    """Map a reference estimated on the kept rollouts back to the group's indices, with the flags."""
    back = lambda o: [s.kept[j] if j >= 0 else j for j in o]  # noqa: E731  (-1: a synthesized candidate)
    ref.order = back(ref.order) if ref.order is not None else None
    # recursive rounds after the first read synthesized candidates, not rollouts: their indices stay
    ref.calls = [{**c, "order": back(c["order"])} if "order" in c and c.get("round", 0) == 0 else c for c in ref.calls]
    ref.calls = [{**c, "candidate": s.kept[c["candidate"]]} if "candidate" in c else c for c in ref.calls]  # a verifier's one-candidate calls
    ref.excluded = dict(s.excluded)
    ref.flags = (ref.flags + [f"excluded:{i}:{why}" for i, why in s.excluded.items()] + [f"anchor_directed:{i}" for i in s.directed]
                 + [f"anchor_sifted:{i}:{k}" for i, k in s.sifted.items()])
    return ref


def nothing_left(spec: dict, s: Screened) -> Reference:
    """Every rollout was left out: no anchor call, no answer; every reward is 0."""
    return Reference(text="", answer=None, prompt=[], finish_reason="screened", estimator=spec, order=[], calls=[],
                     flags=["all_inputs_excluded"] + [f"excluded:{i}:{why}" for i, why in s.excluded.items()], excluded=dict(s.excluded))
