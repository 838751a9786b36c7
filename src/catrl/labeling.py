"""`catrl label`: reference-free labels for an unlabeled dataset.

Per row: G rollouts from the policy, one reference synthesized by the anchor from the rollouts alone,
and agreement statistics. Rows are processed in chunks (one batched policy call, one batched anchor
call each) and appended in input order; rows already in the output are skipped, and every model call
is cached, so a killed run resumes. Output schema, one line a row:
verifiable: {"id", "question", "reference", "answer", "majority_answer", "agrees_with_majority",
             "agreement", "rollout_answers", "flags", "anchor_prompt_chars"}
freeform:   {"id", "question", "reference", "rubric": [criterion, ...], "flags", "rollouts": G,
             "anchor_prompt_chars"}  (the rubric is written by the anchor from the reference)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catrl.engines.base import Engine
from catrl.errors import InputError
from catrl.rubrics import propose_rubrics
from catrl.rewards import verifiable_rewards
from catrl.rollouts import build_request, read_done
from catrl.selection import majority
from catrl.estimators import Estimator, check_estimator, default_estimator
from catrl.types import Example, Sampling
from catrl.verify import equivalent


def label_record(example: Example, rollouts: list[str], ref, match: str = "symbolic") -> dict[str, Any]:
    rec = verifiable_rewards(ref, rollouts, mode=match)
    maj = majority(rollouts, match)
    agrees = ref.answer is not None and maj.answer is not None and equivalent(maj.answer, ref.answer, mode=match).equal
    return {
        "id": example.id,
        "question": example.question,
        "reference": ref.text,
        "answer": ref.answer,
        "majority_answer": maj.answer,
        "agrees_with_majority": agrees,
        "agreement": sum(rec.matches) / len(rollouts),
        "rollout_answers": rec.answers,
        "flags": rec.flags,
        "anchor_prompt_chars": sum(len(m["content"]) for m in ref.prompt),
        "estimator": ref.estimator,
    }


def freeform_record(example: Example, rollouts: list[str], ref, rubric) -> dict[str, Any]:
    return {
        "id": example.id,
        "question": example.question,
        "reference": ref.text,
        "rubric": [c.text for c in rubric.criteria],
        "flags": list(rubric.flags) + ([] if ref.finish_reason == "stop" else [f"reference_{ref.finish_reason}"]),
        "rollouts": len(rollouts),
        "anchor_prompt_chars": sum(len(m["content"]) for m in ref.prompt),
        "estimator": ref.estimator,
    }


def label_file(
    policy: Engine,
    anchor: Engine,
    examples: list[Example],
    sampling: Sampling,
    anchor_sampling: Sampling,
    g: int,
    out_path: Path,
    prompt: str = "solve",
    chunk: int = 16,
    on_row: Callable[[int, int], None] | None = None,
    task: str = "verifiable",
    estimator: Estimator | str | None = None,
) -> dict[str, int]:
    if task not in ("verifiable", "freeform"):
        raise InputError(f"task must be 'verifiable' or 'freeform', got {task!r}")
    mode = "reasoning" if task == "verifiable" else "freeform"
    est = check_estimator(estimator or default_estimator(mode), g, mode)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out_path)
    todo = [e for e in examples if e.id not in done]
    stats = {"resumed": len(examples) - len(todo), "written": 0, "agree_with_majority": 0}
    if on_row:
        on_row(stats["resumed"], len(examples))
    with open(out_path, "a", encoding="utf-8") as out:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            groups = policy.generate([build_request(e, prompt) for e in part], sampling, n=g)
            texts = [[c.text for c in grp] for grp in groups]
            refs = est.estimate_many(anchor, groups, mode, anchor_sampling, ids=[e.id for e in part])
            rubrics = propose_rubrics(anchor, [r.text for r in refs], sampling=anchor_sampling) if task == "freeform" else refs
            for e, t, ref, rub in zip(part, texts, refs, rubrics, strict=True):
                rec = label_record(e, t, ref) if task == "verifiable" else freeform_record(e, t, ref, rub)
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
                stats["written"] += 1
                stats["agree_with_majority"] += int(rec.get("agrees_with_majority", False))
                if on_row:
                    on_row(stats["resumed"] + stats["written"], len(examples))
    return stats
