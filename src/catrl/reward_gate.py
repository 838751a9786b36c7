"""The reward-accuracy gate: how often a label-free reward pays the right rollouts, before anything trains.

A CaT-RL run is only as good as its reward, and grading a reward costs no training: sample groups
from the initial policy on the training questions, score every group with each candidate reward,
and grade each rollout against gold afterwards (gold never reaches a reward). Per reward:

- precision: of the rewarded rollouts, the share that are right (what the policy is pushed towards);
- recall: of the right rollouts, the share that are rewarded;
- accuracy: the share of rollouts whose reward agrees with their correctness. TTRL (arXiv 2504.16084)
  shows why this, not only the label's accuracy, predicts learning: a wrong label still gives wrong
  rollouts 0, so the reward can be right per rollout while the label is wrong;
- label accuracy: the share of groups whose reference (or vote) is right (controls have none);
- signal: the share of groups whose rewards vary (GRPO learns nothing from a flat group), and of
  those, the share where the rewarded rollouts are right more often than the unrewarded ones
  (the advantage points the right way).

Pure functions over per-rollout rewards and correctness; `score_gate` is the one model-facing edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from catrl.types import RewardRecord
from catrl.verify import is_right

Progress = Callable[[int, int], None]  # (groups done, total)


@dataclass
class GateGroup:
    """One sampled group, graded: the rollouts' correctness against gold, and each reward's verdicts."""

    id: str
    gold: str | None
    answers: list[str | None]
    correct: list[bool]
    rewards: dict[str, list[float]] = field(default_factory=dict)  # reward name -> per rollout
    labels: dict[str, str | None] = field(default_factory=dict)  # reward name -> the reference's final answer
    label_right: dict[str, bool | None] = field(default_factory=dict)  # None: a control (no label)
    flags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RewardAccuracy:
    name: str
    groups: int
    rollouts: int
    right: int  # rollouts right against gold
    rewarded: int
    rewarded_right: int
    precision: float | None  # rewarded_right / rewarded
    recall: float | None  # rewarded_right / right
    accuracy: float  # rollouts whose reward agrees with their correctness
    label_accuracy: float | None  # groups whose label is right (None for controls)
    signal_groups: int  # groups whose rewards vary
    signal_right: int  # of those, groups where rewarded rollouts are right more often than the others

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def grade_group(gid: str, gold: str | None, answers: Sequence[str | None], match: str = "symbolic") -> GateGroup:
    """A group's rollouts graded against gold, for scoring only."""
    return GateGroup(gid, gold, list(answers), [is_right(gold, a, match) for a in answers])


def add_reward(group: GateGroup, name: str, record: RewardRecord, match: str = "symbolic") -> None:
    """One reward's verdicts on a graded group. A reward whose reference has an answer has a label;
    the controls (random, format) flag themselves `control:*` and have none."""
    group.rewards[name] = [float(r) for r in record.rewards]
    control = any(f.startswith("control:") for f in record.flags)
    label = None if control or record.reference is None else record.reference.answer
    group.labels[name] = label
    group.label_right[name] = None if control else is_right(group.gold, label, match)
    group.flags[name] = list(record.flags)


def reward_accuracy(groups: Sequence[GateGroup], name: str) -> RewardAccuracy:
    """Precision, recall and accuracy of one reward over graded groups (a reward counts as paid when > 0)."""
    rows = [g for g in groups if name in g.rewards]
    pairs = [(r > 0, c) for g in rows for r, c in zip(g.rewards[name], g.correct, strict=True)]
    right = sum(c for _, c in pairs)
    paid = sum(p for p, _ in pairs)
    paid_right = sum(p and c for p, c in pairs)
    labels = [g.label_right[name] for g in rows if g.label_right.get(name) is not None]
    signal = [g for g in rows if len(set(g.rewards[name])) > 1]
    return RewardAccuracy(
        name=name, groups=len(rows), rollouts=len(pairs), right=right, rewarded=paid, rewarded_right=paid_right,
        precision=paid_right / paid if paid else None, recall=paid_right / right if right else None,
        accuracy=sum(p == c for p, c in pairs) / len(pairs) if pairs else float("nan"),
        label_accuracy=sum(labels) / len(labels) if labels else None,
        signal_groups=len(signal), signal_right=sum(advantage_points_right(g.rewards[name], g.correct) for g in signal),
    )


def add_support(group: GateGroup, name: str, base: str, min_support: int) -> None:
    """`base`'s verdicts on a group under corroboration (catrl.rewards.corroborate): what scoring `base` with
    `min_support` gives, from the references it already has."""
    from catrl.rewards import corroborated

    rewards, flag = corroborated(group.rewards[base], min_support)
    group.rewards[name], group.flags[name] = rewards, list(group.flags[base]) + ([flag] if flag else [])
    group.labels[name], group.label_right[name] = group.labels[base], group.label_right[base]


def advantage_points_right(rewards: Sequence[float], correct: Sequence[bool]) -> bool:
    """Whether the rollouts a group rewards are right more often than those it does not (the direction
    GRPO's group-normalised advantage pushes)."""
    paid = [c for r, c in zip(rewards, correct, strict=True) if r > 0]
    unpaid = [c for r, c in zip(rewards, correct, strict=True) if r <= 0]
    return bool(paid and unpaid) and sum(paid) / len(paid) > sum(unpaid) / len(unpaid)


def score_gate(groups: Sequence[GateGroup], rollouts: Sequence[Sequence[str]], name: str, reward: Any,
               match: str = "symbolic", chunk: int = 4, progress: Progress | None = None) -> None:
    """Score every group with one reward (anything with CaTReward's `score_groups`), `chunk` groups
    per call so a cached engine keeps what finished and a progress bar moves."""
    for start in range(0, len(groups), chunk):
        part = list(range(start, min(start + chunk, len(groups))))
        records = reward.score_groups([None] * len(part), [rollouts[i] for i in part])
        for i, rec in zip(part, records, strict=True):
            add_reward(groups[i], name, rec, match)
        if progress:
            progress(part[-1] + 1, len(groups))


# -- the model-facing edge: sample from the initial policy, build the rewards to compare ----------------
GATE_REWARDS = ("cat", "majority", "random", "format")
DEFAULT_GATE = "cat,cat@qwen2.5-coder-1.5b,majority,random,format"


def split_support(name: str) -> tuple[str, int]:
    """`REWARD+support=K` -> (REWARD, K): the reward with corroboration (catrl.rewards.corroborate); K is 1 without it."""
    from catrl.errors import InputError

    base, plus, k = name.partition("+support=")
    if not plus:
        return name, 1
    if not k.isdecimal() or not k.isascii() or int(k) < 1 or base.partition("@")[0] not in ("cat", "majority"):
        raise InputError(f"rewards: {name}: +support=K takes an integer K >= 1, on cat or majority")
    return base, int(k)


def parse_gate_rewards(spec: str, g: int = 8, match: str = "symbolic") -> list[str]:
    """`cat`, `cat@MODEL`, `cat@MODEL/ESTIMATOR`, `majority`, `random`, `format`, comma-separated, each of cat and majority
    optionally `+support=K`; checked (estimators too, for groups of `g`) before any model loads."""
    from catrl.errors import InputError
    from catrl.estimators import check_estimator, split_specs
    from catrl.rewards import check_min_support

    names = split_specs(spec)  # an estimator's own comma-separated parameters stay with its reward name
    bases = [split_support(n)[0] for n in names]
    bad = [n for n, b in zip(names, bases, strict=True) if b.partition("@")[0] not in GATE_REWARDS or ("@" in b and b.partition("@")[0] != "cat")]
    if bad or not names:
        raise InputError(f"rewards: unknown {', '.join(bad) or 'empty list'}; use cat, cat@MODEL, cat@MODEL/ESTIMATOR, majority, random, format "
                         "(cat and majority optionally +support=K)")
    for n, b in zip(names, bases, strict=True):
        try:
            check_min_support(split_support(n)[1], g)
            if est := b.partition("@")[2].partition("/")[2]:
                check_estimator(est, g, "reasoning", match)
        except InputError as e:
            raise InputError(f"rewards: {n}: {e}") from None
    return names


def gate_examples(cfg: Any, groups: int) -> list[Any]:
    """The first `groups` training questions of a train config (its dataset, offset and limit)."""
    from catrl.datasets import load_examples

    return load_examples(cfg.dataset, limit=cfg.offset + (cfg.limit or groups))[cfg.offset:][:groups]


def sample_groups(policy: Any, examples: Sequence[Any], cfg: Any, progress: Progress | None = None, batch: int = 2) -> list[list[str]]:
    """G rollouts per question from the initial policy, with the config's prompt and sampling (as GRPO samples them)."""
    from catrl.rollouts import build_request
    from catrl.types import Sampling

    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.max_completion_tokens, seed=cfg.seed)
    requests = [build_request(e, cfg.prompt) for e in examples]
    out: list[list[str]] = []
    for start in range(0, len(requests), batch):
        out += [[c.text for c in comps] for comps in policy.generate(requests[start:start + batch], sampling, n=cfg.g)]
        if progress:
            progress(len(out), len(requests))
    return out


def gate_reward(name: str, cfg: Any, open_anchor: Callable[[str], Any]) -> tuple[Any, Any]:
    """A reward from its spec and the engine to close after it (None for the anchor-free ones).
    `open_anchor(model)` opens a frozen anchor engine."""
    from catrl.control_rewards import FormatReward, RandomReward
    from catrl.rewards import CaTReward, MajorityReward
    from catrl.types import Sampling

    name, support = split_support(name)
    if name == "majority":
        return MajorityReward(match=cfg.match, min_support=support), None
    if name == "random":
        return RandomReward(p=0.5, seed=cfg.seed), None
    if name == "format":
        return FormatReward(), None
    model, _, estimator = name.partition("@")[2].partition("/")
    engine = open_anchor(model or cfg.anchor or cfg.policy)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.anchor_max_tokens, seed=cfg.seed)
    return CaTReward(engine, match=cfg.match, sampling=sampling, estimator=estimator or cfg.estimator, min_support=support), engine


def write_gate(out_dir: Any, groups: Sequence[GateGroup], rows: Sequence[RewardAccuracy], meta: dict[str, Any], title: str) -> None:
    """groups.jsonl (every group graded, with each reward's verdicts), summary.json (the rows and `meta`) and gate.png."""
    import json
    from pathlib import Path

    from catrl.report.plots import plot_gate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "groups.jsonl", "w", encoding="utf-8") as f:
        for g in groups:
            f.write(json.dumps(g.__dict__, ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps({**meta, "rewards": [r.as_row() for r in rows]}, indent=2) + "\n", encoding="utf-8")
    plot_gate(list(rows), out / "gate.png", title)


StageProgress = Callable[[str, int, int], None]  # (stage: "rollouts" or a reward name, done, total)


def run_gate(cfg: Any, names: Sequence[str], groups: int, open_engine: Callable[[str, str], Any],
             progress: StageProgress | None = None, after: Callable[[str], None] | None = None) -> tuple[list[GateGroup], dict[str, float]]:
    """The whole gate: sample the first `groups` training questions from the initial policy, grade the rollouts
    against gold, score them with every reward. `open_engine(role, model)` opens the "policy" (the config's GGUF)
    or a frozen "anchor"; `after(stage)` runs after each stage that called a model (a caller exports its calls
    there). Returns the graded groups and the seconds each stage took."""
    import time

    from catrl.datasets import gold_answer
    from catrl.verify import extract_answer

    tick = progress or (lambda stage, done, total: None)
    examples = gate_examples(cfg, groups)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    policy = open_engine("policy", cfg.policy)
    try:
        rollouts = sample_groups(policy, examples, cfg, progress=lambda done, total: tick("rollouts", done, total))
    finally:
        policy.close()
    seconds["rollouts"] = time.perf_counter() - t0
    if after:
        after("rollouts")
    graded = [grade_group(e.id, gold_answer(cfg.dataset, e.gold) if e.gold is not None else None, [extract_answer(r) for r in rs], cfg.match)
              for e, rs in zip(examples, rollouts, strict=True)]
    parsed = {n: split_support(n) for n in names}
    derived = {n: (base, k) for n, (base, k) in parsed.items() if k > 1 and base in names}
    for name in [n for n in names if n not in derived]:
        t0 = time.perf_counter()
        reward, engine = gate_reward(name, cfg, lambda model: open_engine("anchor", model))
        try:
            score_gate(graded, rollouts, name, reward, cfg.match, progress=lambda done, total, n=name: tick(n, done, total))
        finally:
            if engine is not None:
                engine.close()
        seconds[name] = time.perf_counter() - t0
        if engine is not None and after:
            after(name)
    for name, (base, support) in derived.items():  # the same references: only the pay rule differs, so no model call
        for g in graded:
            add_support(g, name, base, support)
    return graded, seconds
