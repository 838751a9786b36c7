"""Estimators that ask the anchor to write: the paper's synthesis, a permutation ensemble over balanced
orders, and RSA-like recursive aggregation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from catrl.errors import InputError
from catrl.estimators.base import Estimator, _Call, call_record, group_seed, medoid, shuffled, vote
from catrl.synthesis import synthesis_request
from catrl.types import ChatRequest, Completion
from catrl.verify import extract_answer


def cyclic_orders(base: Sequence[int], k: int) -> list[list[int]]:
    """k shifts of `base` spaced G/k apart: each candidate takes k different positions and k different
    candidates sit last (with k = G, every candidate sits in every position once)."""
    g = len(base)
    starts = sorted({(j * g) // k for j in range(k)}) if k <= g else list(range(g)) + [j % g for j in range(g, k)]
    return [list(base[s:]) + list(base[:s]) for s in starts]


def synthesis_prompt(texts: Sequence[str], order: Sequence[int], mode: str, numbered: bool = True) -> ChatRequest:
    """The paper's synthesis prompt with the candidates in `order` (indices into texts)."""
    return synthesis_request([texts[i] for i in order], mode, numbered=numbered)


@dataclass
class Synthesis(Estimator):
    """The paper's synthesis: every candidate in one prompt."""

    shuffle: bool = False
    numbered: bool = True  # candidates carry id="1".."G" (the paper's prompt); 0: plain <candidate> blocks

    def __post_init__(self):
        self.name = "synthesis"

    def spec(self):
        """`numbered` is named only when off, so the paper's spec reads as before."""
        return {k: v for k, v in super().spec().items() if k != "numbered" or not v}

    def _estimate(self, anchor, groups, mode="reasoning", sampling=None, ids=None, on_result=None):
        texts = self._groups(groups, mode)
        calls = [_Call(i, synthesis_prompt(t, o, mode, self.numbered), o)
                 for i, t in enumerate(texts)
                 for o in [shuffled(len(t), group_seed(self.seed, t)) if self.shuffle else list(range(len(t)))]]
        comps = self._run(anchor, calls, sampling, ids, on_result)
        return [self._reference(c, k, mode, [call_record(k, c, mode)], []) for k, c in zip(calls, comps, strict=True)]


@dataclass
class Permutation(Estimator):
    """k syntheses over k balanced orders; the answer most reach wins."""

    k: int = 4

    def __post_init__(self):
        self.name = "permutation"

    def check(self, g=None, mode="reasoning"):
        super().check(g, mode)
        if self.k < 1:
            raise InputError(f"estimator permutation: k must be >= 1, got {self.k}")

    def _estimate(self, anchor, groups, mode="reasoning", sampling=None, ids=None, on_result=None):
        texts = self._groups(groups, mode)
        calls = [_Call(i, synthesis_prompt(t, o, mode), o, f"#p{j}")
                 for i, t in enumerate(texts)
                 for j, o in enumerate(cyclic_orders(shuffled(len(t), group_seed(self.seed, t)), self.k))]
        comps = self._run(anchor, calls, sampling, ids, on_result)
        out = []
        for i in range(len(texts)):
            mine = [(k, c) for k, c in zip(calls, comps, strict=True) if k.group == i]
            records = [call_record(k, c, mode) for k, c in mine]
            flags: list[str] = []
            if mode == "reasoning":
                pick, classes = vote([r["answer"] for r in records], match=self.match)
                if pick is None:
                    pick, flags = 0, ["no_synthesis_answer"]
                elif len(classes) > 1:
                    flags = [f"syntheses_disagree:{len(classes)}"]
            else:
                pick = medoid([c.text for _, c in mine])
            out.append(self._reference(mine[pick][1], mine[pick][0], mode, records, flags))
        return out


@dataclass
class Recursive(Estimator):
    """RSA-like: T rounds of G new candidates, each synthesized from a seeded subset of m; then the vote."""

    m: int = 4
    t: int = 2

    def __post_init__(self):
        self.name = "recursive"

    def check(self, g=None, mode="reasoning"):
        super().check(g, mode)
        if self.m < 2:
            raise InputError(f"estimator recursive: m must be >= 2, got {self.m}")
        if self.t < 1:
            raise InputError(f"estimator recursive: t must be >= 1, got {self.t}")
        if g is not None and self.m > g:
            raise InputError(f"estimator recursive: m={self.m} is more than the group's {g} rollouts")

    def _estimate(self, anchor, groups, mode="reasoning", sampling=None, ids=None, on_result=None):
        pops = self._groups(groups, mode)
        rngs = [random.Random(group_seed(self.seed, p)) for p in pops]
        records: list[list[dict]] = [[] for _ in pops]
        last: list[list[tuple[_Call, Completion]]] = [[] for _ in pops]
        for rnd in range(self.t):
            calls = [_Call(i, synthesis_prompt(p, o, mode), o, f"#r{rnd}.{j}")
                     for i, p in enumerate(pops) for j in range(len(p)) for o in [rngs[i].sample(range(len(p)), min(self.m, len(p)))]]
            comps = self._run(anchor, calls, sampling, ids, on_result)
            new: list[list[str]] = [[] for _ in pops]
            last = [[] for _ in pops]
            for k, c in zip(calls, comps, strict=True):
                rec = call_record(k, c, mode)
                rec["round"] = rnd
                records[k.group].append(rec)
                new[k.group].append(c.text)
                last[k.group].append((k, c))
            pops = new
        out = []
        for i, final in enumerate(last):
            flags: list[str] = []
            if mode == "reasoning":
                pick, _ = vote([extract_answer(c.text) for _, c in final], match=self.match)
                if pick is None:
                    pick, flags = 0, ["no_synthesis_answer"]
            else:
                pick = medoid([c.text for _, c in final])
            k, c = final[pick]
            ref = self._reference(c, k, mode, records[i], flags)
            ref.order = [-1]  # the final prompt reads synthesized candidates, not rollouts
            out.append(ref)
        return out
