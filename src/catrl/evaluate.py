"""Benchmark runs of test-time CaT against the paper's baselines, on one shared set of rollouts.

Rollouts are generated once per (dataset, policy, G, sampling, seed) and every method chooses or
synthesizes from those same rollouts; every model call is cached, so a killed run resumes. Gold
answers are used only to score, never shown to a method.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catrl import selection
from catrl.datasets import gold_answer, load_examples
from catrl.engines.base import Engine
from catrl.estimators import check_estimator, default_estimator
from catrl.errors import InputError
from catrl.metrics import accuracy, paired_diff
from catrl.rollouts import build_request
from catrl.synthesis import reference_flags
from catrl.types import Sampling
from catrl.verify import equivalent, extract_answer, is_right

log = logging.getLogger(__name__)

METHODS = ("single", "majority", "min_ppl", "self_bon", "usc", "mutual", "cat")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EvalConfig:
    dataset: str = "gsm8k"
    field_map: dict[str, str] | None = None
    limit: int | None = None
    g: int = 8
    prompt: str = "solve"
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=512, seed=0, logprobs=True))
    anchor_sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=1024, seed=0))
    methods: tuple[str, ...] = ("single", "majority", "min_ppl", "cat")
    method_limits: dict[str, int] = field(default_factory=dict)  # run a method on the first N questions only
    g_sweep: tuple[int, ...] = (1, 2, 4, 8)
    sweep_limit: int | None = None  # questions in the accuracy-vs-G sweep (default: all)
    match: str = "symbolic"
    estimator: str = field(default_factory=lambda: default_estimator("reasoning"))  # the `cat` row's reference (catrl.estimators spec)

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if any(k < 1 or k > self.g for k in self.g_sweep):
            raise InputError(f"every G in the sweep must be in 1..{self.g}, got {self.g_sweep}")
        check_estimator(self.estimator, min((*self.g_sweep, self.g)) if "cat" in self.methods else self.g, "reasoning", self.match)


@dataclass
class QuestionResult:
    id: str
    question: str
    gold: str | None
    rollouts: list[dict[str, Any]]  # text, answer, correct, finish_reason, mean_nll
    majority: dict[str, Any]
    reference: dict[str, Any] | None  # text, answer, prompt, correct
    methods: dict[str, dict[str, Any]]  # name -> index, answer, correct, flags
    sweep: dict[str, dict[str, Any]] = field(default_factory=dict)  # "k" -> cat/majority answers and correctness


def run_eval(
    policy: Engine, anchor: Engine, cfg: EvalConfig, progress: Progress | None = None, selector: Engine | None = None,
) -> list[QuestionResult]:
    """All methods on the same rollouts; returns one record per question. `selector` runs the policy's
    own judgments after sampling (min-PPL scoring, self-BoN, USC, mutual predictability): the policy
    by default; a caller may pass the same weights on other kernels (flash attention off decodes
    faster after the long prompts these read)."""
    selector = selector or policy
    cfg.check()
    tick = progress or (lambda stage, done, total: None)
    examples = load_examples(cfg.dataset, cfg.field_map, cfg.limit)
    golds = [gold_answer(cfg.dataset, e.gold) for e in examples]
    if all(g is None for g in golds):
        raise InputError(f"{cfg.dataset}: no gold answers to score against; map one with --field gold=COLUMN")
    n = len(examples)
    cap = lambda m: min(n, cfg.method_limits.get(m, n))  # noqa: E731

    # 1) rollouts, shared by every method
    requests = [build_request(e, cfg.prompt) for e in examples]
    done = [0]

    def on_rollouts(i, comps):
        done[0] += 1
        tick("rollouts", done[0], n)

    groups = policy.generate(requests, cfg.sampling, n=cfg.g, on_result=on_rollouts)
    texts = [[c.text for c in g] for g in groups]
    answers = [[extract_answer(t) for t in g] for g in texts]

    # 2) CaT: the anchor synthesizes from the rollouts alone
    results_methods: list[dict[str, dict[str, Any]]] = [{} for _ in examples]
    refs = None
    estimator = check_estimator(cfg.estimator, match=cfg.match)
    if "cat" in cfg.methods:
        k = cap("cat")
        refs = estimator.estimate_many(anchor, groups[:k], "reasoning", cfg.anchor_sampling, ids=[e.id for e in examples[:k]],
                                       on_result=stage_counter(tick, estimator.name, k))
        for i, ref in enumerate(refs):
            results_methods[i]["cat"] = {"index": None, "answer": ref.answer,
                                         "flags": ([] if ref.answer else ["no_reference_answer"]) + reference_flags(ref) + ref.flags}

    # 3) baselines
    for i in range(cap("single") if "single" in cfg.methods else 0):
        results_methods[i]["single"] = _sel(selection.single(texts[i]))
    majorities = [selection.majority(g, cfg.match) for g in texts]
    if "majority" in cfg.methods:
        for i in range(cap("majority")):
            results_methods[i]["majority"] = _sel(majorities[i])
    if "min_ppl" in cfg.methods:
        k = cap("min_ppl")
        for i, s in enumerate(selection.min_perplexity(selector, requests[:k], groups[:k])):
            results_methods[i]["min_ppl"] = _sel(s)
    questions = [e.question for e in examples]
    for name, fn in (("self_bon", selection.self_select), ("usc", selection.universal_self_consistency)):
        if name in cfg.methods:
            k = cap(name)
            tick(name, 0, k)
            for i, s in enumerate(fn(selector, questions[:k], texts[:k])):
                results_methods[i][name] = _sel(s)
            tick(name, k, k)
    if "mutual" in cfg.methods:
        k = cap("mutual")
        for i in range(k):
            results_methods[i]["mutual"] = _sel(selection.mutual_predictability(selector, questions[i : i + 1], texts[i : i + 1])[0])
            tick("mutual", i + 1, k)

    # 4) accuracy versus G, reusing the first k rollouts
    sweep: list[dict[str, dict[str, Any]]] = [{} for _ in examples]
    if "cat" in cfg.methods and cfg.g_sweep:
        ks = min(cap("cat"), cfg.sweep_limit if cfg.sweep_limit is not None else n)
        for g in cfg.g_sweep:
            if g == cfg.g:
                sub = refs[:ks]
            else:
                sub = estimator.estimate_many(anchor, [t[:g] for t in groups[:ks]], "reasoning", cfg.anchor_sampling,
                                              on_result=stage_counter(tick, f"{estimator.name} G={g}", ks))
            for i in range(ks):
                maj = selection.majority(texts[i][:g], cfg.match)
                sweep[i][str(g)] = {"cat": sub[i].answer, "cat_correct": is_right(golds[i], sub[i].answer, cfg.match),
                                    "majority": maj.answer, "majority_correct": is_right(golds[i], maj.answer, cfg.match)}

    # 5) score against gold
    out = []
    for i, e in enumerate(examples):
        for m in results_methods[i].values():
            m["correct"] = is_right(golds[i], m["answer"], cfg.match)
        rolls = [
            {"text": c.text, "answer": a, "correct": is_right(golds[i], a, cfg.match), "finish_reason": c.finish_reason,
             "mean_nll": selection.mean_nll(c)}
            for c, a in zip(groups[i], answers[i])
        ]
        ref = None
        if refs is not None and i < len(refs):
            ref = {**refs[i].to_dict(), "correct": is_right(golds[i], refs[i].answer, cfg.match)}
        maj = majorities[i]
        out.append(QuestionResult(
            id=e.id, question=e.question, gold=golds[i], rollouts=rolls,
            majority={"answer": maj.answer, "index": maj.index, **maj.detail}, reference=ref,
            methods=results_methods[i], sweep=sweep[i],
        ))
    return out


def stage_counter(tick: Progress, stage: str, total: int):
    done = [0]

    def on_result(i, comps):
        done[0] += 1
        tick(stage, done[0], total)

    tick(stage, 0, total)
    return on_result


def _sel(s: selection.Selection) -> dict[str, Any]:
    return {"index": s.index, "answer": s.answer, "flags": s.flags}


# -- summaries ---------------------------------------------------------------------------------
def summarize(results: list[QuestionResult], match: str = "symbolic") -> dict[str, Any]:
    """Accuracy with CIs per method, paired differences of CaT, and the paper's analyses."""
    methods = [m for m in METHODS if any(m in r.methods for r in results)]
    summary: dict[str, Any] = {"questions": len(results), "methods": {}, "paired": {}, "analyses": {}, "sweep": {}}
    for m in methods:
        correct = [r.methods[m]["correct"] for r in results if m in r.methods]
        summary["methods"][m] = asdict(accuracy(correct))
    if "cat" in methods:
        for other in ("majority", "single", "min_ppl", "self_bon", "usc", "mutual"):
            pairs = [(r.methods["cat"]["correct"], r.methods[other]["correct"]) for r in results if "cat" in r.methods and other in r.methods]
            if pairs:
                summary["paired"][f"cat-{other}"] = asdict(paired_diff([a for a, _ in pairs], [b for _, b in pairs]))
        with_cat = [r for r in results if "cat" in r.methods]
        disagree = [r for r in with_cat if not _same(r.methods["cat"]["answer"], r.majority["answer"], match)]
        all_wrong = [r for r in with_cat if not any(x["correct"] for x in r.rollouts)]
        summary["analyses"] = {
            "disagree_with_majority_share": len(disagree) / len(with_cat) if with_cat else float("nan"),
            "disagree_count": len(disagree),
            "cat_accuracy_when_disagreeing": asdict(accuracy([r.methods["cat"]["correct"] for r in disagree])),
            "majority_accuracy_when_disagreeing": asdict(accuracy([_maj_correct(r) for r in disagree])),
            "cat_right_all_rollouts_wrong_share": sum(r.methods["cat"]["correct"] for r in all_wrong) / len(with_cat) if with_cat else float("nan"),
            "cat_right_all_rollouts_wrong_count": sum(r.methods["cat"]["correct"] for r in all_wrong),
            "all_rollouts_wrong_count": len(all_wrong),
            "any_rollout_right_share": 1 - len(all_wrong) / len(with_cat) if with_cat else float("nan"),  # the ceiling for selection
            "cat_no_answer_count": sum(r.methods["cat"]["answer"] is None for r in with_cat),  # references without a final answer
        }
        # where the reference's answer comes from: what explains CaT winning or losing against the vote
        positions = [answer_positions(r.methods["cat"]["answer"], [x["answer"] for x in r.rollouts], match) for r in with_cat]
        prompt_order = [in_prompt_order(p, (r.reference or {}).get("order")) for r, p in zip(with_cat, positions, strict=True)]
        support = [reference_support(r.methods["cat"]["answer"], [x["answer"] for x in r.rollouts], r.majority["answer"], match, p)
                   for r, p in zip(with_cat, positions, strict=True)]
        for kind in ("minority", "none"):
            chosen = [r.methods["cat"]["correct"] for r, s in zip(with_cat, support, strict=True) if s == kind]
            summary["analyses"][f"cat_answer_{kind}_count"] = len(chosen)
            summary["analyses"][f"cat_accuracy_answer_{kind}"] = asdict(accuracy(chosen))
        # the anchor's position bias: which candidate's answer the reference repeats, by position in the prompt
        held = [h for h in prompt_order if h is not None]
        width = max((len(h) for h in held), default=0)
        summary["analyses"]["cat_answer_held_by_candidate_share"] = [
            sum(i < len(h) and h[i] for h in held) / len(held) for i in range(width)] if held else []
        summary["analyses"]["cat_lone_answer_candidate_count"] = lone_counts(held)
        ks = sorted({int(k) for r in results for k in r.sweep})
        for k in ks:
            rows = [r.sweep[str(k)] for r in results if str(k) in r.sweep]
            summary["sweep"][str(k)] = {
                "cat": asdict(accuracy([x["cat_correct"] for x in rows])),
                "majority": asdict(accuracy([x["majority_correct"] for x in rows])),
            }
    return summary


def reference_support(answer: str | None, rollout_answers: list[str | None], majority_answer: str | None, match: str = "symbolic",
                      positions: list[bool] | None = None) -> str:
    """Which rollouts hold the reference's answer: "majority" (the vote's answer), "minority" (some
    rollouts, not the vote's), "none" (no rollout: the anchor's own), or "no_answer". `positions`:
    answer_positions' result for the same answer, when the caller has it (each pair is checked once)."""
    if answer is None:
        return "no_answer"
    if _same(answer, majority_answer, match):
        return "majority"
    held = positions if positions is not None else answer_positions(answer, rollout_answers, match)
    return "minority" if any(held or ()) else "none"


def answer_positions(answer: str | None, rollout_answers: list[str | None], match: str = "symbolic") -> list[bool] | None:
    """Per candidate, in the order the anchor read them: does it hold the reference's answer? None
    when the reference has no answer. A small anchor that repeats the first or last candidate it read,
    whatever the others say, shows as a peak at the ends."""
    if answer is None:
        return None
    return [a is not None and _same(answer, a, match) for a in rollout_answers]


def in_prompt_order(held: list[bool] | None, order: list[int] | None) -> list[bool] | None:
    """answer_positions' row re-ordered to the order the anchor read the candidates in (a shuffled
    prompt's `order`); as is when the prompt held every rollout in the given order, or not all of them."""
    if held is None or order is None or sorted(order) != list(range(len(held))):
        return held
    return [held[i] for i in order]


def lone_counts(held: list[list[bool]]) -> list[int]:
    """Per candidate position, the groups whose reference answer that candidate alone holds (answer_positions
    rows). Chance spreads them evenly; a peak at one end is an anchor re-telling the first or last it read."""
    width = max((len(h) for h in held), default=0)
    return [sum(sum(h) == 1 and i < len(h) and h[i] for h in held) for i in range(width)]


def _same(a: str | None, b: str | None, match: str) -> bool:
    if a is None or b is None:
        return a is b
    return equivalent(b, a, mode=match).equal


def _maj_correct(r: QuestionResult) -> bool:
    return bool(r.methods.get("majority", {}).get("correct", False))


def write_results(results: list[QuestionResult], summary: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))

