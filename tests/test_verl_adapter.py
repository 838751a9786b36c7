"""The veRL batch reward function, fed a batch built the way veRL builds it: dataset rows with
`extra_info`, a uid per prompt, then `repeat(n, interleave=True)` (np.repeat on object arrays, so
the G rows of a prompt share one extra_info dict), decoded responses in that order."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from catrl.errors import InputError
from catrl.integrations.verl import compute_score, group_runs
from catrl.rewards import CaTReward
from fakes import ScriptedEngine


def verl_batch(golds: list[str], n: int):
    rows = {
        "data_source": np.array(["openai/gsm8k"] * len(golds), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": g} for g in golds], dtype=object),
        "extra_info": np.array([{"split": "train", "index": k} for k in range(len(golds))], dtype=object),
        "uid": np.array([str(uuid.uuid4()) for _ in golds], dtype=object),
    }
    return {k: np.repeat(v, n, axis=0) for k, v in rows.items()}  # DataProto.repeat(n, interleave=True)


def test_compute_score_regroups_a_verl_batch(tmp_path):
    batch = verl_batch(["42", "4"], n=4)
    responses = ["\\boxed{42}", "x \\boxed{42}", "\\boxed{41}", "none", "\\boxed{4}", "\\boxed{4}", "\\boxed{5}", "\\boxed{4}"]
    anchor = ScriptedEngine(lambda p: "\\boxed{42}" if "\\boxed{42}" in p else "\\boxed{4}")
    scores = compute_score(
        data_sources=batch["data_source"], solution_strs=responses,
        ground_truths=[r["ground_truth"] for r in batch["reward_model"]], extra_infos=batch["extra_info"],
        group_size=4, reward=CaTReward(anchor), audit_path=str(tmp_path / "audit.jsonl"))
    assert [s["score"] for s in scores] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert len(anchor.requests) == 2 and all("gsm8k" not in r.messages[-1]["content"] for r in anchor.requests)
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [a["responses"] for a in audit] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert audit[0]["rollouts"] == responses[:4] and [a["gold"] for a in audit] == ["42", "4"] and audit[1]["id"] == "1"
    from catrl.run_audit import grade_group, read_audit, stretches

    whole = stretches([grade_group(r) for r in read_audit(tmp_path / "audit.jsonl")])[-1]  # `catrl audit` reads it
    assert (whole.graded, whole.reference_right, whole.rewarded, whole.rewarded_right) == (2, 2, 5, 5)


def test_compute_score_passes_min_support_and_refuses_a_clash(tmp_path):
    batch = verl_batch(["42"], n=3)
    kw = dict(data_sources=batch["data_source"], solution_strs=["\\boxed{42}", "\\boxed{41}", "\\boxed{40}"],
              ground_truths=[r["ground_truth"] for r in batch["reward_model"]], extra_infos=batch["extra_info"], group_size=3)
    anchor = ScriptedEngine(lambda p: "\\boxed{42}")
    assert [s["score"] for s in compute_score(**kw, reward=CaTReward(anchor))] == [1.0, 0.0, 0.0]
    assert [s["score"] for s in compute_score(**kw, reward=CaTReward(anchor, min_support=2), min_support=2)] == [0.0, 0.0, 0.0]
    with pytest.raises(InputError, match="min_support=2 was given with a reward of its own"):
        compute_score(**kw, reward=CaTReward(anchor), min_support=2)


def test_group_runs_without_index_uses_the_shared_dict():
    shared = [{}, {}]
    infos = np.repeat(np.array(shared, dtype=object), 3, axis=0)
    assert group_runs(infos, 3) == [[0, 1, 2], [3, 4, 5]]
    assert group_runs([{"uid": "a"}] * 2 + [{"uid": "b"}] * 2) == [[0, 1], [2, 3]]


def test_partial_or_shuffled_groups_are_refused():
    infos = [{"index": 0}, {"index": 1}, {"index": 0}, {"index": 1}]
    with pytest.raises(InputError, match="partial group"):
        group_runs(infos, 2)
    with pytest.raises(InputError, match="differ in length"):
        compute_score(["a"], ["x", "y"], [None], [{}], reward=CaTReward(ScriptedEngine()))


def test_a_failed_anchor_call_scores_zero_flagged_then_raises():
    from catrl.errors import EngineError

    class DeadAnchor(ScriptedEngine):
        def generate(self, requests, sampling, n=1, on_result=None):
            raise EngineError("anchor server down after 5 retries")

    batch = verl_batch(["42"], n=2)
    kw = dict(data_sources=batch["data_source"], solution_strs=["\\boxed{42}", "\\boxed{41}"],
              ground_truths=[r["ground_truth"] for r in batch["reward_model"]], extra_infos=batch["extra_info"],
              reward=CaTReward(DeadAnchor()), max_anchor_failures=2)
    scores = compute_score(**kw)
    assert [s["score"] for s in scores] == [0.0, 0.0] and [s["cat_anchor_error"] for s in scores] == [1.0, 1.0]
    with pytest.raises(EngineError, match="2 reward calls in a row failed"):
        compute_score(**kw)
