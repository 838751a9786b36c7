"""The paper's baselines, all choosing among the same G rollouts CaT synthesizes from.

single (first sample), majority vote over extracted answers (ties: the answer seen first),
self-selected best-of-N (the policy picks, seeing the question), min-perplexity (lowest mean token
NLL under the policy), mutual predictability (each rollout scored last after the others; lowest NLL
wins), universal self-consistency (the model picks the most consistent response, seeing the question).
Each returns a Selection: the chosen index (or None) and its answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from catrl import prompting
from catrl.engines.base import Engine, require_scoring
from catrl.delimit import escape_delimiters, format_candidates
from catrl.types import ChatRequest, Completion, Sampling
from catrl.verify import equivalent, extract_answer

_CHOICE = re.compile(r"<choice>\s*(\d+)\s*</choice>", re.IGNORECASE)
_LAST_INT = re.compile(r"\b(\d+)\b")


@dataclass
class Selection:
    index: int | None
    answer: str | None
    flags: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)


def single(rollouts: Sequence[str]) -> Selection:
    return Selection(0, extract_answer(rollouts[0]))


def answer_classes(answers: Sequence[str | None], mode: str = "symbolic") -> list[list[int]]:
    """Indices grouped by equivalent answer, classes in order of first appearance; None answers dropped."""
    classes: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for cls in classes:
            if equivalent(answers[cls[0]], a, mode=mode).equal:
                cls.append(i)
                break
        else:
            classes.append([i])
    return classes


def majority(rollouts: Sequence[str], mode: str = "symbolic") -> Selection:
    return majority_of_answers([extract_answer(r) for r in rollouts], mode)


def majority_of_answers(answers: Sequence[str | None], mode: str = "symbolic") -> Selection:
    """Majority vote over answers already extracted (None: no answer, never a vote)."""
    classes = answer_classes(answers, mode)
    if not classes:
        return Selection(None, None, ["no_answers"])
    best = max(classes, key=len)  # max keeps the first of equal sizes: ties go to the answer seen first
    return Selection(best[0], answers[best[0]], detail={"votes": len(best), "classes": len(classes)})


def parse_choice(text: str, count: int) -> int | None:
    """1-based choice in <choice> tags (last one wins), else the last integer in range; 0-based out."""
    for pattern in (_CHOICE, _LAST_INT):
        for m in reversed(pattern.findall(text)):
            k = int(m)
            if 1 <= k <= count:
                return k - 1
    return None


def _choose(engine: Engine, prompt: str, questions: Sequence[str], groups: Sequence[Sequence[str]], sampling: Sampling) -> list[Selection]:
    reqs = [
        ChatRequest.user(prompting.render(prompt, question=escape_delimiters(q), count=str(len(g)), candidates=format_candidates(g)))
        for q, g in zip(questions, groups, strict=True)
    ]
    outs = engine.generate(reqs, sampling, n=1)
    sels = []
    for g, (comp,) in zip(groups, outs, strict=True):
        k = parse_choice(comp.text, len(g))
        if k is None:
            sels.append(Selection(0, extract_answer(g[0]), ["unparsed_choice"], {"judge": comp.text}))
        else:
            sels.append(Selection(k, extract_answer(g[k]), detail={"judge": comp.text}))
    return sels


def self_select(
    policy: Engine, questions: Sequence[str], groups: Sequence[Sequence[str]], sampling: Sampling | None = None, prompt: str = "self_select",
) -> list[Selection]:
    """Self-selected best-of-N: the policy itself picks its best rollout, seeing the question
    (`prompt="self_select_freeform"` for conversations)."""
    return _choose(policy, prompt, questions, groups, sampling or Sampling(temperature=0, max_tokens=512))


def universal_self_consistency(engine: Engine, questions: Sequence[str], groups: Sequence[Sequence[str]], sampling: Sampling | None = None) -> list[Selection]:
    """USC: the model selects the most consistent response, seeing the question."""
    return _choose(engine, "usc", questions, groups, sampling or Sampling(temperature=0, max_tokens=512))


def mean_nll(c: Completion, tail: int = 0) -> float | None:
    """Mean token NLL from a completion's own logprobs (with `tail`, over its last `tail` tokens only);
    None when it has none; inf when it is empty."""
    if c.logprobs is None:
        return None
    if not c.logprobs:
        return float("inf")
    lps = c.logprobs[-tail:] if tail > 0 else c.logprobs
    return -sum(t.logprob for t in lps) / len(lps)


def min_perplexity(policy: Engine, requests: Sequence[ChatRequest], groups: Sequence[Sequence[Completion]]) -> list[Selection]:
    """Lowest mean token NLL under the policy; uses the rollouts' own logprobs when they have them."""
    sels = []
    for req, g in zip(requests, groups, strict=True):
        nlls = [mean_nll(c) for c in g]
        if any(x is None for x in nlls):
            require_scoring(policy)
            nlls = [s.mean_nll for s in policy.score([req] * len(g), [c.text for c in g])]
        k = min(range(len(g)), key=lambda i: (nlls[i], i))
        sels.append(Selection(k, extract_answer(g[k].text), detail={"nll": nlls}))
    return sels


def mutual_predictability(
    policy: Engine, questions: Sequence[str], groups: Sequence[Sequence[str]], prompt: str = "mutual_context",
) -> list[Selection]:
    """Each rollout scored as the policy's answer after seeing the others; the most predictable wins."""
    require_scoring(policy)
    sels = []
    for q, g in zip(questions, groups, strict=True):
        reqs, conts = [], []
        order = list(reversed(range(len(g))))  # rollout i after 0..i-1: consecutive contexts share a prefix
        for i in order:
            others = [r for j, r in enumerate(g) if j != i]
            text = prompting.render(prompt, question=escape_delimiters(q), candidates=format_candidates(others))
            reqs.append(ChatRequest.user(text))
            conts.append(g[i])
        scored = policy.score(reqs, conts)
        nlls = [0.0] * len(g)
        for i, sc in zip(order, scored, strict=True):
            nlls[i] = sc.mean_nll
        k = min(range(len(g)), key=lambda i: (nlls[i], i))
        sels.append(Selection(k, extract_answer(g[k]), detail={"nll": nlls}))
    return sels
