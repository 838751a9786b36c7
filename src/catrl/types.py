"""The few dataclasses shared across catrl. Everything else passes these, not dicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one call. Defaults are the paper's Qwen settings."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_tokens: int = 512
    seed: int = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sampling:
        d = dict(d)
        d["stop"] = tuple(d.get("stop") or ())
        return cls(**d)


@dataclass(frozen=True)
class ChatRequest:
    """One chat prompt. `id` is for error messages and logs only; it is not part of cache keys."""

    messages: tuple[Message, ...]
    id: str = ""

    @classmethod
    def user(cls, text: str, id: str = "", system: str | None = None) -> ChatRequest:
        msgs: list[Message] = []
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": text})
        return cls(messages=tuple(msgs), id=id)

    def to_list(self) -> list[Message]:
        return [dict(m) for m in self.messages]


@dataclass
class TokenLogprob:
    token: str
    logprob: float


# finish reasons set by the engine's context size rather than the request: "context" (the sequence's
# context filled before max_tokens) and "prompt_too_long" (no room for one token; empty text). Never
# cached, since raising the context changes them; a reference that ends so is flagged.
CONTEXT_BOUND = frozenset({"context", "prompt_too_long"})


@dataclass
class Completion:
    """One sampled completion of a chat request."""

    text: str
    finish_reason: str  # "stop" | "length" (max_tokens) | one of CONTEXT_BOUND
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    cached: bool = field(default=False, compare=False)
    # the sampled token ids, ending with the end-of-generation token when there was one: what a trainer
    # needs to score exactly what was sampled. Engine-local (llama.cpp only): never cached, so None on a hit
    token_ids: list[int] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def prompt_too_long(cls, prompt_tokens: int, logprobs: bool) -> Completion:
        """The defined outcome of a prompt that leaves no room to generate: empty, never cached, flagged
        downstream; logprobs `[]` when asked for, so min-PPL never picks it (its mean NLL is inf)."""
        return cls("", "prompt_too_long", prompt_tokens, 0, logprobs=[] if logprobs else None, token_ids=[])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        d.pop("token_ids")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Completion:
        lp = d.get("logprobs")
        return cls(
            text=d["text"],
            finish_reason=d["finish_reason"],
            prompt_tokens=d["prompt_tokens"],
            completion_tokens=d["completion_tokens"],
            logprobs=[TokenLogprob(**t) for t in lp] if lp is not None else None,
        )


@dataclass
class ScoredContinuation:
    """Per-token logprobs of a given continuation under the model (teacher forcing)."""

    tokens: list[TokenLogprob]
    prompt_tokens: int = 0  # the prompt read before the continuation (what scoring cost); 0 where unknown

    @property
    def mean_nll(self) -> float:
        if not self.tokens:
            return float("nan")
        return -sum(t.logprob for t in self.tokens) / len(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": [asdict(t) for t in self.tokens], "prompt_tokens": self.prompt_tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoredContinuation:
        return cls(tokens=[TokenLogprob(**t) for t in d["tokens"]], prompt_tokens=d.get("prompt_tokens", 0))


@dataclass
class Criterion:
    """One binary, checkable rubric item. `points` is 1 for self-proposed rubrics; physician rubrics
    (HealthBench) carry signed points, negative for behaviour a response must avoid."""

    text: str
    points: float = 1.0
    tags: list[str] = field(default_factory=list)


@dataclass
class Rubric:
    """Criteria plus where they came from and what the model was sent, for the audit record."""

    criteria: list[Criterion]
    source: str  # "reference" | "question" | "physician"
    prompt: list[Message] | None = None
    raw: str = ""  # the model's output the criteria were parsed from
    flags: list[str] = field(default_factory=list)  # "rubric_parse_error", "too_few_criteria", "duplicates_removed", ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    """A judge's decision on one criterion for one response; `met` is None when it could not be parsed."""

    met: bool | None
    reason: str = ""
    flag: str | None = None  # "unparsed_verdict" | "judge_error"


@dataclass
class Example:
    """One dataset row: the question CaT sees, and a gold answer used only to score.

    Chat datasets (HealthBench) also carry the whole conversation in `messages` (the last turn is
    the user's) and their physician rubric in `criteria`; `question` is then the last user turn."""

    id: str
    question: str
    gold: str | None = None
    source: str = ""  # "file:line" for error messages and audit pages
    messages: list[Message] | None = None
    criteria: list[Criterion] | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Reference:
    """What the anchor synthesized from one group of rollouts, with the exact prompt it was sent."""

    text: str
    answer: str | None  # extracted final answer (verifiable mode), else None
    prompt: list[Message]
    finish_reason: str = "stop"  # the anchor call's; "unanimous" / "vote" when no anchor was called
    # how it was estimated (catrl.estimators): the estimator's name and parameters, the candidate order
    # of `prompt` (rollout indices, first read first), one record per anchor call (order, tokens,
    # answer), and flags such as "unanimous", "no_candidate_answers", "syntheses_disagree:2"
    estimator: dict[str, Any] = field(default_factory=lambda: {"name": "synthesis"})
    order: list[int] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    excluded: dict[int, str] = field(default_factory=dict)  # rollouts left out by screening, and why (reward 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def anchor_tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens of every anchor call this reference cost."""
        return (sum(c.get("prompt_tokens", 0) for c in self.calls), sum(c.get("completion_tokens", 0) for c in self.calls))


@dataclass
class RewardRecord:
    """One group's rewards and everything needed to audit them."""

    rewards: list[float]
    reference: Reference | None
    answers: list[str | None] = field(default_factory=list)  # per rollout
    matches: list[bool] = field(default_factory=list)  # per rollout
    rollout_flags: list[list[str]] = field(default_factory=list)  # per rollout: "no_answer", "verify_timeout", ...
    flags: list[str] = field(default_factory=list)  # group: "no_reference_answer", ...
    rubric: Rubric | None = None  # free-form tasks: the criteria the rewards were judged against
    verdicts: list[list[Verdict]] = field(default_factory=list)  # per rollout, per criterion

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
