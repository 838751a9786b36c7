"""Estimators that vote on the rollouts' final answers: the plain vote, the confidence-weighted vote
(no anchor), and the vote weighted by the anchor as a verifier (teacher-forced Yes/No, no text written)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from catrl import prompting
from catrl.delimit import wrap
from catrl.engines.base import Engine, require_scoring
from catrl.errors import InputError
from catrl.estimators.base import Candidate, Estimator, _voted, representative, softmax_weights, vote
from catrl.selection import answer_classes
from catrl.types import ChatRequest, Reference, ScoredContinuation
from catrl.verify import extract_answer


@dataclass
class _Vote(Estimator):
    """A vote over the rollouts' final answers, with no anchor; subclasses say how each rollout weighs."""

    @property
    def uses_anchor(self) -> bool:
        return False

    def check(self, g=None, mode="reasoning"):
        super().check(g, mode)
        if mode != "reasoning":
            raise InputError(f"estimator {self.name} votes on final answers (mode reasoning); the free-form analogue is the min_ppl baseline")

    def weights(self, group: Sequence[Candidate]) -> tuple[list[float], list[str]]:
        return [1.0] * len(group), []

    def _estimate(self, anchor, groups, mode="reasoning", sampling=None, ids=None, on_result=None):
        texts = self._groups(groups, mode)
        out = []
        for g, t in zip(groups, texts, strict=True):
            weights, flags = self.weights(g)
            pick, classes = vote([extract_answer(x) for x in t], weights, self.match)
            out.append(_voted(self, t, pick, classes, weights, flags))
        return out


@dataclass
class ConfidenceVote(_Vote):
    """A label-free baseline: votes weighted by the rollouts' own token confidence (CISC); `tail=N`
    measures it over each rollout's last N tokens only (DeepConf's tail confidence), 0 over all."""

    tau: float = 0.1
    tail: int = 0

    def __post_init__(self):
        self.name = "confidence_vote"

    def check(self, g=None, mode="reasoning"):
        super().check(g, mode)
        if not self.tau > 0:
            raise InputError(f"estimator confidence_vote: tau must be > 0, got {self.tau}")
        if self.tail < 0:
            raise InputError(f"estimator confidence_vote: tail must be >= 0 tokens, got {self.tail}")

    def weights(self, group):
        w, had = softmax_weights(group, self.tau, self.tail)
        return w, [] if had else ["no_logprobs"]


@dataclass
class Majority(_Vote):
    """The plain vote (TTRL's pseudo-label; ties to the answer seen first)."""

    def __post_init__(self):
        self.name = "majority"


def verify_request(text: str) -> ChatRequest:
    """The anchor reads one candidate alone (no question, no other candidate) and is asked Yes or No."""
    return ChatRequest.user(prompting.render("verify_candidate", candidate=wrap("candidate", text)))


def yes_probability(yes: ScoredContinuation, no: ScoredContinuation) -> float:
    """P(Yes) against P(No), from the anchor's teacher-forced logprobs of the two replies."""
    a, b = sum(t.logprob for t in yes.tokens), sum(t.logprob for t in no.tokens)
    return 1.0 / (1.0 + math.exp(max(-60.0, min(60.0, b - a))))


@dataclass
class VerifiedVote(Estimator):
    """The anchor as a verifier, not a writer: each candidate is read alone and the anchor's P(Yes) to
    "is this solution correct?" (teacher-forced, so no text is generated and nothing is parsed) weighs
    its vote: weight = P(Yes) ** alpha (alpha 0 is the plain vote). One candidate per prompt leaves no
    order to be biased by. `scope=reps` verifies one representative per answer class (the class
    weighs support * P(Yes)**alpha), `scope=all` every rollout with an answer. Unanimous groups need no
    anchor. The text is the winning class's most confident verified member."""

    alpha: float = 1.0
    scope: str = "all"
    skip_unanimous: bool = True

    def __post_init__(self):
        self.name = "verified_vote"

    @property
    def needs_scoring(self) -> bool:
        return True

    def check(self, g=None, mode="reasoning"):
        super().check(g, mode)
        if mode != "reasoning":
            raise InputError("estimator verified_vote votes on final answers (mode reasoning); for free-form use synthesis, permutation or recursive")
        if self.scope not in ("all", "reps"):
            raise InputError(f"estimator verified_vote: scope must be all or reps, got {self.scope!r}")
        if not self.alpha >= 0:
            raise InputError(f"estimator verified_vote: alpha must be >= 0, got {self.alpha}")

    def _estimate(self, anchor, groups, mode="reasoning", sampling=None, ids=None, on_result=None):
        texts = self._groups(groups, mode)
        answers = [[extract_answer(x) for x in t] for t in texts]
        plans = []
        for g, t, a in zip(groups, texts, answers, strict=True):
            classes = answer_classes(a, self.match)
            if len(classes) <= 1 and (self.skip_unanimous or not classes):
                plans.append((classes, []))
                continue
            plans.append((classes, [representative(c, g) for c in classes] if self.scope == "reps" else sorted(i for c in classes for i in c)))
        todo = [(gi, i) for gi, (_, who) in enumerate(plans) for i in who]
        scored = self._score(anchor, [texts[gi][i] for gi, i in todo])
        p_yes = {k: p for k, p in zip(todo, scored, strict=True)}
        out = []
        for gi, (t, (classes, who)) in enumerate(zip(texts, plans, strict=True)):
            if not who:  # unanimous, or no answer at all
                out.append(_voted(self, t, classes[0][0] if classes else None, classes, [1.0] * len(t), ["unanimous"] if classes else []))
                continue
            records = [{"candidate": i, "prompt_tokens": p_yes[gi, i][1], "completion_tokens": 0, "p_yes": round(p_yes[gi, i][0], 4)} for i in who]
            p = {i: p_yes[gi, i][0] for i in who}
            if self.scope == "reps":
                score = [len(c) * p[r] ** self.alpha for c, r in zip(classes, who, strict=True)]
            else:
                score = [sum(p[i] ** self.alpha for i in c) for c in classes]
            best = max(range(len(classes)), key=lambda k: score[k])  # max keeps the first of equal scores
            pick = max((i for i in classes[best] if i in p), key=lambda i: p[i])
            out.append(Reference(text=t[pick], answer=answers[gi][pick], prompt=verify_request(t[pick]).to_list(), finish_reason="verified_vote",
                                 estimator=self.spec(), order=[pick], calls=records,
                                 flags=[] if best == max(range(len(classes)), key=lambda k: len(classes[k])) else ["overrules_vote"]))
        return out

    def _score(self, anchor: Engine | None, texts: Sequence[str], chunk: int = 16) -> list[tuple[float, int]]:
        """(P(Yes), tokens read) per text. Both replies are scored after the same prompt (the embedded
        engine reuses the prefix); chunks keep what a killed run scored in the cache."""
        if not texts:
            return []
        if anchor is None:
            raise InputError(f"estimator {self.name!r} needs an anchor engine")
        require_scoring(anchor)
        out = []
        for s in range(0, len(texts), chunk):
            reqs = [verify_request(t) for t in texts[s:s + chunk]]
            scored = anchor.score([r for r in reqs for _ in (0, 1)], [c for _ in reqs for c in ("Yes", "No")])
            out += [(yes_probability(y, n), y.prompt_tokens + len(y.tokens) + len(n.tokens))  # the prompt is read once
                    for y, n in zip(scored[::2], scored[1::2], strict=True)]
        return out
