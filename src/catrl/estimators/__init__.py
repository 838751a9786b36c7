"""Reference estimators: one group of rollouts in, one Reference out, the question never seen.

The paper's synthesis is one way to estimate the reference; a small anchor re-tells one candidate,
most often the last it read (docs/cat_quality), so the others here make the estimate robust to order
or lean on the vote. Every estimator reads only the rollouts (text, and for `confidence_vote` their
token logprobs), never the question or a label, and records in the Reference its name, parameters,
every anchor prompt (with the candidate order it used), token counts and flags.

- `synthesis`: the paper's method, all G candidates in one prompt (order as given; `shuffle=1` a
  seeded shuffle per group).
- `permutation`: k syntheses over k balanced cyclic shifts of a seeded shuffle (each candidate sits
  in k different positions, k different candidates sit last); the answer most syntheses reach wins
  (ties: the one reached first, in shift order); its text is the first synthesis holding it.
  Free-form: the synthesis most similar (word overlap) to the others, the ensemble's medoid.
- `cluster`: rollouts grouped by equivalent final answer; the anchor reads one representative per
  distinct answer with its support (how many rollouts reach it). A unanimous group needs no anchor.
  `order=both` overrules the vote only when two readings in reversed orders agree on another answer.
- `recursive`: RSA-like; T rounds, each making G new candidates from seeded subsets of m, then the
  final population's vote (free-form: its medoid).
- `confidence_vote`: no anchor; each rollout's vote weighs softmax(mean token logprob / tau) over
  the group (CISC); tau -> inf is the plain vote.
- `majority`: the plain vote (TTRL's label), as an estimator so every consumer can use it.

Every estimator also takes `min_support` (math only): with 2, a reference whose answer fewer than two
rollouts reached is replaced by the vote's rollout when the vote's answer has that support (flag
`uncorroborated_reference`); the anchor calls are the same.

Specs are strings, `name` or `name:key=value,key=value` (e.g. `permutation:k=4`), parsed and checked
before any model loads.
"""

from __future__ import annotations

import re
from typing import Any

from catrl.errors import InputError
from catrl.estimators.base import (MODES, Candidate, Estimator, call_record, group_seed, medoid, representative, shuffled,
                                   softmax_weights, vote)
from catrl.estimators.cluster import CLUSTER_ORDERS, ClusterView, cluster_order, cluster_prompt
from catrl.estimators.synthesized import Permutation, Recursive, Synthesis, cyclic_orders, synthesis_prompt
from catrl.estimators.votes import ConfidenceVote, Majority, VerifiedVote, verify_request, yes_probability

__all__ = [
    "MODES", "Candidate", "Estimator", "call_record", "group_seed", "medoid", "representative", "shuffled", "softmax_weights", "vote",
    "CLUSTER_ORDERS", "ClusterView", "cluster_order", "cluster_prompt", "Permutation", "Recursive", "Synthesis", "cyclic_orders",
    "synthesis_prompt", "ConfidenceVote", "Majority", "VerifiedVote", "verify_request", "yes_probability",
    "REGISTRY", "DEFAULT", "DEFAULTS_BY_MODE", "default_estimator", "parse_estimator", "split_specs", "check_estimator",
]

REGISTRY: dict[str, type[Estimator]] = {
    "synthesis": Synthesis, "permutation": Permutation, "cluster": ClusterView, "recursive": Recursive,
    "confidence_vote": ConfidenceVote, "majority": Majority, "verified_vote": VerifiedVote,
}
DEFAULT = "synthesis"  # a spec of None: the paper's method, and what the training rewards use unless told
DEFAULTS_BY_MODE = {"reasoning": "cluster:order=both,min_support=2", "freeform": "synthesis"}


def default_estimator(mode: str) -> str:
    """The estimator `answer`, `label` and the eval `cat` row use when none is named. Reasoning: the
    best measured on GSM8K and MATH-500 (docs/reference_estimators/corroborated: the cluster view in two
    orders, overruling the vote only towards an answer two rollouts reached; level with the vote, which
    `answer` prints beside it). Free-form keeps the paper's synthesis: there is no answer to vote
    on, and no free-form estimator has been measured better."""
    if mode not in DEFAULTS_BY_MODE:
        raise InputError(f"mode must be one of {', '.join(DEFAULTS_BY_MODE)}, got {mode!r}")
    return DEFAULTS_BY_MODE[mode]


def _value(name: str, key: str, raw: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        return type(current)(raw)
    except ValueError:
        raise InputError(f"estimator {name}: {key}={raw!r} is not a {type(current).__name__}") from None


def parse_estimator(spec: str | Estimator | None, match: str = "symbolic") -> Estimator:
    """`name` or `name:key=value,...` -> an Estimator; unknown names and keys fail with the choices."""
    if isinstance(spec, Estimator):
        return spec
    spec = (spec or DEFAULT).strip()
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in REGISTRY:
        raise InputError(f"unknown estimator {name!r}; choose from {', '.join(REGISTRY)}")
    est = REGISTRY[name](match=match)
    known = est.params()
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in known:
            raise InputError(f"estimator {name}: unknown parameter {item!r}; it takes {', '.join(f'{k}={v}' for k, v in known.items())}")
        setattr(est, key, _value(name, key, raw.strip(), known[key]))
    est.check()
    return est


_PARAMETER = re.compile(r"[A-Za-z_]\w*\s*=")  # a `key=value` piece of a spec


def split_specs(text: str) -> list[str]:
    """A comma list of specs, where a spec's own parameters are comma-separated too:
    "synthesis,recursive:m=2,t=1" -> ["synthesis", "recursive:m=2,t=1"]. A piece that starts with `key=`
    continues the spec before it when that one has parameters (a ":"), so a gate reward such as
    `cat+support=2` or `cat@M/recursive:m=2,t=1+support=2` keeps its own place (catrl.reward_gate)."""
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if out and ":" in out[-1] and ":" not in piece and _PARAMETER.match(piece):
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def check_estimator(spec: str | Estimator | None, g: int | None = None, mode: str = "reasoning", match: str = "symbolic") -> Estimator:
    """Parse and check against the group size and mode: what every command calls before loading a model."""
    est = parse_estimator(spec, match)
    est.check(g, mode)
    return est
