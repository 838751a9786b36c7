"""Test-time CaT on free-form conversations (HealthBench), graded with physician rubrics.

Rollouts are generated once and shared by every method: single (the first rollout), min_ppl,
self_bon (the policy picks its best, seeing the conversation), mutual (mutual predictability) and
cat (the anchor's synthesized response; it never sees the conversation). A grader engine scores
every rollout and the CaT response with HealthBench's per-item grading, so a method's score is the
graded score of what it picked. With `validity=True`, every rollout also gets each candidate reward
(self-proposed rubric, rubric from the question, a model-as-judge "equivalent to the reference?")
and the summary gives each reward's rank correlation with the physician-rubric score.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catrl import healthbench, selection
from catrl.datasets import load_examples
from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.evaluate import Progress, stage_counter
from catrl.judging import equivalence_request, judge_many, parse_verdict
from catrl.metrics import paired_diff, spearman_clustered
from catrl.rewards import rubric_rewards
from catrl.rollouts import build_request
from catrl.rubrics import propose_rubrics
from catrl.estimators import check_estimator, default_estimator
from catrl.types import Example, Sampling

METHODS = ("single", "min_ppl", "self_bon", "mutual", "cat")


@dataclass
class FreeformConfig:
    dataset: str = "healthbench_hard20"
    field_map: dict[str, str] | None = None
    limit: int | None = None
    g: int = 4
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0, logprobs=True))
    anchor_sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0))
    methods: tuple[str, ...] = ("single", "min_ppl", "self_bon", "cat")
    method_limits: dict[str, int] = field(default_factory=dict)
    validity: bool = False
    judge_mode: str = "per_criterion"
    # validity: also judge the self-proposed rubric in these modes (reward "self_rubric_<mode>"), to see
    # what batching costs in validity and how often the modes agree on a verdict
    validity_extra_modes: tuple[str, ...] = ()
    estimator: str = field(default_factory=lambda: default_estimator("freeform"))  # the `cat` response (synthesis, permutation, recursive)
    judge_max_tokens: int | None = None  # cap on every grader / judge answer (None: each mode's default)

    def judge_sampling(self) -> Sampling | None:
        return Sampling(temperature=0, max_tokens=self.judge_max_tokens) if self.judge_max_tokens else None

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown free-form methods {unknown}; choose from {', '.join(METHODS)}")
        check_estimator(self.estimator, self.g, "freeform")


@dataclass
class ConversationResult:
    id: str
    messages: list[dict[str, str]]
    rollouts: list[dict[str, Any]]  # text, score, verdicts, mean_nll, rewards (validity)
    reference: dict[str, Any] | None  # CaT: text, prompt, score, verdicts
    methods: dict[str, dict[str, Any]]  # name -> index (None for cat), score, flags
    rubrics: dict[str, Any] = field(default_factory=dict)  # validity: self/question rubric criteria


def conversation_text(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text for prompts that insert it as one escaped block."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def run_freeform_eval(
    policy: Engine, anchor: Engine, grader: Engine, cfg: FreeformConfig, judge: Engine | None = None, progress: Progress | None = None,
) -> list[ConversationResult]:
    cfg.check()
    tick = progress or (lambda stage, done, total: None)
    examples = load_examples(cfg.dataset, cfg.field_map, cfg.limit)
    bad = [e.source or e.id for e in examples if not e.criteria or e.messages is None]
    if bad:
        raise InputError(f"{bad[0]}: free-form evaluation needs HealthBench-style rows (a 'prompt' conversation and 'rubrics')")
    n = len(examples)
    cap = lambda m: min(n, cfg.method_limits.get(m, n))  # noqa: E731

    requests = [build_request(e, "raw") for e in examples]
    groups = policy.generate(requests, cfg.sampling, n=cfg.g, on_result=stage_counter(tick, "rollouts", n))
    texts = [[c.text for c in g] for g in groups]
    convs = [conversation_text(e.messages) for e in examples]

    picks: list[dict[str, dict[str, Any]]] = [{} for _ in examples]
    refs = None
    if "cat" in cfg.methods:
        k = cap("cat")
        est = check_estimator(cfg.estimator, cfg.g, "freeform")
        refs = est.estimate_many(anchor, groups[:k], "freeform", cfg.anchor_sampling, ids=[e.id for e in examples[:k]],
                                 on_result=stage_counter(tick, est.name, k))
    if "single" in cfg.methods:
        for i in range(cap("single")):
            picks[i]["single"] = {"index": 0, "flags": []}
    if "min_ppl" in cfg.methods:
        for i, s in enumerate(selection.min_perplexity(policy, requests[: cap("min_ppl")], groups[: cap("min_ppl")])):
            picks[i]["min_ppl"] = {"index": s.index, "flags": s.flags}
    if "self_bon" in cfg.methods:
        k = cap("self_bon")
        tick("self_bon", 0, k)
        for i, s in enumerate(selection.self_select(policy, convs[:k], texts[:k], prompt="self_select_freeform")):
            picks[i]["self_bon"] = {"index": s.index, "flags": s.flags}
        tick("self_bon", k, k)
    if "mutual" in cfg.methods:
        k = cap("mutual")
        for i in range(k):
            s = selection.mutual_predictability(policy, convs[i : i + 1], texts[i : i + 1], prompt="mutual_context_freeform")[0]
            picks[i]["mutual"] = {"index": s.index, "flags": s.flags}
            tick("mutual", i + 1, k)

    # grade every rollout and every CaT response against the physician rubric
    flat_ex = [e for e, g in zip(examples, texts) for _ in g]
    flat_resp = [t for g in texts for t in g]
    if refs is not None:
        flat_ex += examples[: len(refs)]
        flat_resp += [r.text for r in refs]
    tick("grading", 0, len(flat_resp))
    graded = healthbench.grade(grader, flat_ex, flat_resp, sampling=cfg.judge_sampling())
    tick("grading", len(flat_resp), len(flat_resp))

    out: list[ConversationResult] = []
    pos = 0
    for i, e in enumerate(examples):
        rolls = []
        for c in groups[i]:
            g = graded[pos]
            pos += 1
            rolls.append({"text": c.text, "finish_reason": c.finish_reason, "tokens": c.completion_tokens,
                          "mean_nll": selection.mean_nll(c), "score": g.score, "verdicts": [asdict(v) for v in g.verdicts]})
        out.append(ConversationResult(e.id, e.messages, rolls, None, {}))
    if refs is not None:
        for i, ref in enumerate(refs):
            g = graded[pos]
            pos += 1
            out[i].reference = {**ref.to_dict(), "score": g.score, "verdicts": [asdict(v) for v in g.verdicts]}
            picks[i]["cat"] = {"index": None, "flags": []}
    for i, r in enumerate(out):
        for name, p in picks[i].items():
            score = r.reference["score"] if name == "cat" else r.rollouts[p["index"]]["score"]
            r.methods[name] = {**p, "score": score}

    if cfg.validity:
        _reward_validity(out, examples, refs, anchor, judge or grader, cfg, tick)
    return out


def _reward_validity(out, examples, refs, anchor, judge, cfg, tick) -> None:
    """Each candidate reward for every rollout, to correlate with the physician-rubric score."""
    if refs is None:
        raise InputError("the reward-validity analysis needs the cat method (its references)")
    k = len(refs)
    tick("rubrics", 0, 2 * k)
    self_rubrics = propose_rubrics(anchor, [r.text for r in refs], sampling=cfg.anchor_sampling)
    q_rubrics = propose_rubrics(anchor, conversations=[e.messages for e in examples[:k]], from_question=True, sampling=cfg.anchor_sampling)
    tick("rubrics", 2 * k, 2 * k)
    passes = [("self_rubric", self_rubrics, cfg.judge_mode), ("question_rubric", q_rubrics, cfg.judge_mode)]
    passes += [(f"self_rubric_{m}", self_rubrics, m) for m in cfg.validity_extra_modes if m != cfg.judge_mode]
    for name, rubrics, mode in passes:
        items = [(examples[i].messages, r["text"], rubrics[i]) for i in range(k) for r in out[i].rollouts]
        tick(f"judge {name}", 0, len(items))
        verdicts = judge_many(judge, items, mode, sampling=cfg.judge_sampling())
        pos = 0
        for i in range(k):
            g = len(out[i].rollouts)
            rec = rubric_rewards(None, rubrics[i], verdicts[pos : pos + g], length_limit=None)
            if name in ("self_rubric", "question_rubric"):
                out[i].rubrics[name] = {"criteria": [c.text for c in rubrics[i].criteria], "flags": rubrics[i].flags}
            for j, r in enumerate(out[i].rollouts):
                r.setdefault("rewards", {})[name] = rec.rewards[j]
                r.setdefault("rubric_verdicts", {})[name] = [v.met for v in verdicts[pos + j]]
            pos += g
        tick(f"judge {name}", len(items), len(items))
    reqs = [equivalence_request(examples[i].messages, r["text"], refs[i].text) for i in range(k) for r in out[i].rollouts]
    tick("judge judge_equiv", 0, len(reqs))
    comps = judge.generate(reqs, cfg.judge_sampling() or Sampling(temperature=0, max_tokens=160), n=1)
    pos = 0
    for i in range(k):
        for r in out[i].rollouts:
            v = parse_verdict(comps[pos][0].text)
            pos += 1
            r.setdefault("rewards", {})["judge_equiv"] = 1.0 if v.met else 0.0
    tick("judge judge_equiv", len(reqs), len(reqs))


def summarize_freeform(results: list[ConversationResult]) -> dict[str, Any]:
    """HealthBench-style clipped means per method, CaT's paired differences, reward validity."""
    methods = [m for m in METHODS if any(m in r.methods for r in results)]
    summary: dict[str, Any] = {"conversations": len(results), "methods": {}, "paired": {}, "validity": {}}
    for m in methods:
        summary["methods"][m] = healthbench.clipped_mean([r.methods[m]["score"] for r in results if m in r.methods])
    summary["methods"]["rollout_mean"] = healthbench.clipped_mean(
        [sum(x["score"] or 0 for x in r.rollouts) / len(r.rollouts) for r in results if r.rollouts])
    if "cat" in methods:
        for other in methods:
            if other == "cat":
                continue
            pairs = [(r.methods["cat"]["score"] or 0.0, r.methods[other]["score"] or 0.0) for r in results if "cat" in r.methods and other in r.methods]
            d = paired_diff([a for a, _ in pairs], [b for _, b in pairs])
            summary["paired"][f"cat-{other}"] = {"n": d.n, "diff": d.diff, "lo": d.lo, "hi": d.hi}
    with_rewards = [r for r in results if r.rollouts and "rewards" in r.rollouts[0]]
    if with_rewards:
        phys = [[x["score"] or 0.0 for x in r.rollouts] for r in with_rewards]
        for name in with_rewards[0].rollouts[0]["rewards"]:
            cand = [[x["rewards"][name] for x in r.rollouts] for r in with_rewards]
            summary["validity"][name] = spearman_clustered(cand, phys)
        summary["mode_agreement"] = mode_agreement(with_rewards)
    return summary


def mode_agreement(results: list[ConversationResult]) -> dict[str, Any]:
    """Share of (rollout, criterion) verdicts on the self-proposed rubric where each extra judge
    mode agrees with the main one (pairs where either verdict is missing are left out)."""
    out: dict[str, Any] = {}
    first = results[0].rollouts[0].get("rubric_verdicts", {}) if results and results[0].rollouts else {}
    for name in (n for n in first if n.startswith("self_rubric_")):
        pairs = [(a, b) for r in results for x in r.rollouts
                 for a, b in zip(x["rubric_verdicts"]["self_rubric"], x["rubric_verdicts"][name], strict=True)
                 if a is not None and b is not None]
        out[name] = {"pairs": len(pairs), "agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else float("nan")}
    return out


def write_freeform(results: list[ConversationResult], summary: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def examples_need_freeform(examples: list[Example]) -> bool:
    return bool(examples) and all(e.criteria is not None and e.messages is not None for e in examples)
