"""What every estimator shares: the Estimator base (screening, batched anchor calls, audit records)
and the pure helpers they pick with (per-group seeds, the vote, representatives, the medoid, CISC weights)."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

from catrl.engines.base import Engine, OnResult, require_scoring
from catrl.errors import InputError
from catrl.guards import has_content, junk_reason
from catrl.screening import nothing_left, restore_indices, screen_group
from catrl.selection import answer_classes, mean_nll
from catrl.sift import ANCHOR, Sifted, sift_groups
from catrl.types import ChatRequest, Completion, Reference, Sampling
from catrl.verify import equivalent, extract_answer


Candidate = Union[str, Completion]
MODES = ("reasoning", "freeform")


def _text(c: Candidate) -> str:
    return c if isinstance(c, str) else c.text


def group_seed(seed: int, texts: Sequence[str]) -> int:
    """A per-group seed from the estimator's seed and the group's own text: the same group always
    gets the same order (so a resumed run hits the cache) and different groups get different ones."""
    h = hashlib.sha256(str(seed).encode())
    for t in texts:
        h.update(b"\0" + t.encode("utf-8", "replace"))
    return int.from_bytes(h.digest()[:8], "big")


def shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def vote(answers: Sequence[str | None], weights: Sequence[float] | None = None, match: str = "symbolic") -> tuple[int | None, list[list[int]]]:
    """Index of the first member of the class with most (weighted) votes, and the classes. Ties go to
    the class seen first. None when no answer is given."""
    classes = answer_classes(answers, match)
    if not classes:
        return None, classes
    w = weights or [1.0] * len(answers)
    best = max(classes, key=lambda c: sum(w[i] for i in c))  # max keeps the first of equal scores
    return best[0], classes


def representative(members: Sequence[int], comps: Sequence[Candidate]) -> int:
    """The solution shown for an answer class: one that finished (a cut-off one may lack its
    reasoning's end), then the most confident (lowest mean token NLL) where logprobs exist, then the
    first. Confidence, not length, because the anchor must judge the steps, and a fluent solution
    states them most plainly."""
    def key(i: int):
        c = comps[i]
        done = 0 if isinstance(c, str) or c.finish_reason == "stop" else 1
        nll = mean_nll(c) if isinstance(c, Completion) else None
        return (done, nll if nll is not None else math.inf, i)
    return min(members, key=key)


_WORD = re.compile(r"\w+")


def medoid(texts: Sequence[str]) -> int:
    """The text with the highest mean word-set Jaccard similarity to the others (ties: the first):
    the ensemble's most central response, where there is no final answer to vote on."""
    sets = [set(_WORD.findall(t.lower())) for t in texts]

    def sim(a: set, b: set) -> float:
        return len(a & b) / len(a | b) if a | b else 1.0
    scores = [sum(sim(s, o) for j, o in enumerate(sets) if j != i) for i, s in enumerate(sets)]
    return max(range(len(texts)), key=lambda i: (scores[i], -i))


def softmax_weights(comps: Sequence[Candidate], tau: float, tail: int = 0) -> tuple[list[float], bool]:
    """CISC weights: softmax over the group of (mean token logprob / tau); with `tail`, the mean over each
    rollout's last `tail` tokens (DeepConf's tail confidence, arXiv 2508.15260: how sure the model is
    where it states its answer). Returns (weights, had_logprobs); without logprobs every weight is 1
    (the plain vote) and the caller flags it."""
    nlls = [mean_nll(c, tail) if isinstance(c, Completion) else None for c in comps]
    if any(x is None for x in nlls):
        return [1.0] * len(comps), False
    conf = [-x / tau if math.isfinite(x) else -math.inf for x in nlls]
    top = max(conf)
    if not math.isfinite(top):
        return [1.0] * len(comps), True
    e = [math.exp(c - top) for c in conf]
    s = sum(e)
    return [x / s for x in e], True


@dataclass
class _Call:
    """One anchor call planned by an estimator: the group it belongs to, the request, the order."""

    group: int
    request: ChatRequest
    order: list[int]
    tag: str = ""


@dataclass
class Estimator:
    """Base: a name, parameters, and `estimate_many`. Subclasses keep their parameters as fields."""

    name: str = field(default="", init=False)
    seed: int = 0
    screen: bool = True  # catrl.screening: junk out of the prompt and the vote, anchor-directed text cut
    sift: bool = False   # with screen: the anchor model also marks sentences written to sway it (catrl.sift.ANCHOR)
    min_support: int = 1  # reasoning: the reference's answer must be one this many rollouts reached, when any is (1: no rule)
    match: str = "symbolic"

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("name", "match")}

    def spec(self) -> dict[str, Any]:
        """What results, audit records and reports name: every parameter; `sift` only when it is on and
        `min_support` only when it is above 1, so specs made before they existed read as before."""
        return {"name": self.name, **{k: v for k, v in self.params().items()
                                      if not (k == "sift" and not v) and not (k == "min_support" and v == 1)}}

    def check(self, g: int | None = None, mode: str = "reasoning") -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        if self.sift and not self.sifts:
            raise InputError(f"estimator {self.name}: sift=1 needs screen=1 and an estimator that reads the group with the anchor")
        if self.min_support < 1:  # above the group size it is allowed: no answer can be corroborated, so the rule leaves G=1 alone
            raise InputError(f"estimator {self.name}: min_support must be >= 1, got {self.min_support}")
        if self.min_support > 1 and mode != "reasoning":
            raise InputError(f"estimator {self.name}: min_support needs final answers to count (mode reasoning), not {mode}")

    @property
    def uses_anchor(self) -> bool:
        return True

    @property
    def needs_scoring(self) -> bool:
        """Whether the anchor must score continuations (teacher forcing), which not every engine can."""
        return self.sifts

    @property
    def sifts(self) -> bool:
        return self.sift and self.screen and self.uses_anchor

    def estimate(self, anchor: Engine | None, rollouts: Sequence[Candidate], mode: str = "reasoning",
                 sampling: Sampling | None = None) -> Reference:
        return self.estimate_many(anchor, [rollouts], mode, sampling)[0]

    def estimate_many(self, anchor: Engine | None, groups: Sequence[Sequence[Candidate]], mode: str = "reasoning",
                      sampling: Sampling | None = None, ids: Sequence[str] | None = None, on_result: OnResult | None = None) -> list[Reference]:
        """One Reference per group. With `screen` (the default) junk rollouts stay out and anchor-directed
        sentences are cut first (catrl.screening); a group that screening leaves unchanged gets exactly
        the prompt it would get without it."""
        self.check(None, mode)
        for i, g in enumerate(groups):
            if len(g) == 0:
                raise InputError(f"group {i}: cannot estimate a reference from an empty group of rollouts")
            self.check(len(g), mode)
        if not self.screen:
            return self._supported(anchor, groups, mode, sampling, ids, on_result)
        sifted = self._sift(anchor, groups) if self.sifts else [None] * len(groups)
        scr = [screen_group(g, strip=self.uses_anchor, sifted=sf) for g, sf in zip(groups, sifted, strict=True)]
        if not any(s.changed for s in scr):
            return self._supported(anchor, groups, mode, sampling, ids, on_result)
        live = [i for i, s in enumerate(scr) if s.kept]
        refs = iter(self._supported(anchor, [scr[i].shown for i in live], mode, sampling,
                                    [ids[i] if ids else str(i) for i in live], on_result))
        return [restore_indices(next(refs), s) if s.kept else nothing_left(self.spec(), s) for s in scr]

    def _supported(self, anchor: Engine | None, groups: Sequence[Sequence[Candidate]], mode: str, sampling: Sampling | None,
                   ids: Sequence[str] | None, on_result: OnResult | None) -> list[Reference]:
        """`_estimate`, then the corroboration rule (`min_support`) on the rollouts the estimator read."""
        refs = self._estimate(anchor, groups, mode, sampling, ids, on_result)
        if self.min_support <= 1 or mode != "reasoning":
            return refs
        return [corroborated_reference(r, [_text(c) for c in g], self.min_support, self.match) for r, g in zip(refs, groups, strict=True)]

    def _sift(self, anchor: Engine | None, groups: Sequence[Sequence[Candidate]]) -> list[list[Sifted]]:
        """Every rollout read sentence by sentence by the anchor model (one batch of scorings for all groups)."""
        if anchor is None:
            raise InputError(f"estimator {self.name!r} with sift=1 needs an anchor engine that scores")
        require_scoring(anchor)
        texts = [[_text(c) for c in g] for g in groups]
        return sift_groups(anchor, texts, ANCHOR, lambda gi, _, t: has_content(t) and not junk_reason(t, texts[gi]))  # junk is never read

    def _estimate(self, anchor: Engine | None, groups: Sequence[Sequence[Candidate]], mode: str, sampling: Sampling | None,
                  ids: Sequence[str] | None, on_result: OnResult | None) -> list[Reference]:
        raise NotImplementedError

    # shared plumbing ---------------------------------------------------------------------------
    def _groups(self, groups: Sequence[Sequence[Candidate]], mode: str) -> list[list[str]]:
        return [[_text(c) for c in g] for g in groups]

    def _run(self, anchor: Engine | None, calls: list[_Call], sampling: Sampling | None, ids: Sequence[str] | None,
             on_result: OnResult | None) -> list[Completion]:
        """All planned calls in one batched anchor request (the engine batches them)."""
        if not calls:
            return []
        if anchor is None:
            raise InputError(f"estimator {self.name!r} needs an anchor engine")
        reqs = [ChatRequest(c.request.messages, id=(ids[c.group] if ids else str(c.group)) + c.tag) for c in calls]
        outs = anchor.generate(reqs, sampling or Sampling(max_tokens=1024), n=1, on_result=on_result)
        return [o[0] for o in outs]

    def _reference(self, comp: Completion, call: _Call, mode: str, calls: list[dict], flags: list[str]) -> Reference:
        return Reference(text=comp.text, answer=extract_answer(comp.text) if mode == "reasoning" else None, prompt=call.request.to_list(),
                         finish_reason=comp.finish_reason, estimator=self.spec(), order=list(call.order), calls=calls, flags=flags)


def corroborated_reference(ref: Reference, texts: Sequence[str], min_support: int, match: str = "symbolic") -> Reference:
    """The reference, or the vote's rollout when the reference's answer was reached by fewer than
    `min_support` rollouts while the vote's was reached by at least that many (flag
    `uncorroborated_reference:<support><<min_support>`). The anchor may then still overrule the vote, but
    only towards an answer other rollouts corroborate: on GSM8K's design split a 1.5B anchor that sided
    with a lone rollout against the vote was wrong every time (docs/reference_estimators). When no answer
    is corroborated the estimator's stands: the vote would be no better founded. Pure; no model call."""
    answers = [extract_answer(t) for t in texts]
    pick, classes = vote(answers, match=match)
    if pick is None or max(len(c) for c in classes) < min_support:
        return ref
    # one check per answer class, against the vote's own classes (not a second grouping of every answer)
    support = next((len(c) for c in classes if equivalent(answers[c[0]], ref.answer, mode=match).equal), 0) if ref.answer is not None else 0
    if support >= min_support:
        return ref
    return replace(ref, text=texts[pick], answer=answers[pick], finish_reason="vote",
                   flags=[*ref.flags, f"uncorroborated_reference:{support}<{min_support}"])


def call_record(call: _Call, comp: Completion, mode: str) -> dict[str, Any]:
    """What the audit keeps of each anchor call besides the chosen prompt: its order, cost and answer."""
    return {"order": list(call.order), "prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens,
            "finish_reason": comp.finish_reason, "answer": extract_answer(comp.text) if mode == "reasoning" else None,
            "chars": len(comp.text)}


def _voted(est: Estimator, texts: list[str], pick: int | None, classes: list[list[int]], weights: list[float], flags: list[str]) -> Reference:
    """A vote's Reference: no anchor prompt; the text is the first rollout holding the winning answer."""
    if pick is None:
        return Reference(text="", answer=None, prompt=[], finish_reason="vote", estimator=est.spec(), order=[], calls=[],
                         flags=flags + ["no_candidate_answers"])
    won = next(c for c in classes if pick in c)
    return Reference(text=texts[pick], answer=extract_answer(texts[pick]), prompt=[], finish_reason="vote", estimator=est.spec(),
                     order=[pick], calls=[{"votes": len(won), "weight": round(sum(weights[i] for i in won), 4), "classes": len(classes)}],
                     flags=flags)
