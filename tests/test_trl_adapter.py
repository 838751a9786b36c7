"""The TRL reward-function adapter, called the way GRPOTrainer calls it (no TRL needed here)."""

import json

import pytest

from catrl.errors import EngineError, InputError
from catrl.integrations.trl import CaTRewardFunc, whole_groups
from catrl.rewards import CaTReward, RubricReward
from fakes import ScriptedEngine

P1, P2 = "What is 6*7?", "What is 2+2?"


def anchor_reply(prompt: str) -> str:
    return "\\boxed{42}" if "\\boxed{42}" in prompt else "\\boxed{4}"


def test_groups_must_be_whole():
    assert whole_groups([P1] * 4 + [P2] * 4, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert whole_groups([P1] * 8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the same prompt twice in a batch
    with pytest.raises(InputError, match="partial group.*TRL issue #3896"):
        whole_groups([P1] * 3 + [P2] * 4, 4)


def test_rewards_metrics_and_audit(tmp_path):
    anchor = ScriptedEngine(anchor_reply)
    f = CaTRewardFunc(CaTReward(anchor), num_generations=4, gold_column="answer", audit_path=tmp_path / "audit.jsonl")
    completions = ["\\boxed{42}", "\\boxed{42}", "\\boxed{41}", "no answer", "\\boxed{4}", "\\boxed{4}", "\\boxed{4}", "\\boxed{4}"]
    logged = {}
    rewards = f(prompts=[P1] * 4 + [P2] * 4, completions=completions, completion_ids=[[1]] * 8,
                answer=["42"] * 4 + ["5"] * 4, log_metric=lambda k, v: logged.__setitem__(k, v), trainer_state=None)
    assert rewards == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert len(anchor.requests) == 2  # one synthesis per group, in one batched call
    assert all(P1 not in r.messages[-1]["content"] for r in anchor.requests)  # the anchor never sees the question
    assert logged["cat/zero_variance_groups"] == 0.5 and logged["cat/reference_agrees_with_majority"] == 1.0
    assert logged["cat/reference_accuracy_vs_gold"] == 0.5 and logged["cat/reward_mean"] == 0.75
    assert logged["cat/rollout_accuracy_vs_gold"] == 2 / 8  # two rollouts say 42 (gold), none says 5
    rows = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["completions"] for r in rows] == [[0, 1, 2, 3], [4, 5, 6, 7]] and rows[0]["reference"]["answer"] == "42"
    # the audit row alone is enough to check a reward: prompt, rollout texts, gold (monitoring), verdicts
    assert rows[0]["prompt"] == P1 and rows[0]["rollouts"] == completions[:4] and rows[1]["gold"] == "5"
    assert rows[0]["id"] is None and rows[0]["step"] is None  # no id_column, no trainer_state


def test_conversational_completions_and_rubric_reward_with_lengths():
    def reply(prompt):
        if "grading rubric" in prompt:
            return "<rubric>" + "".join(f"<criterion>c{i}</criterion>" for i in range(5)) + "</rubric>"
        if "<criteria>" in prompt:
            return "<verdicts>" + "".join(f'<verdict id="{i}"><met>yes</met></verdict>' for i in range(1, 6)) + "</verdicts>"
        return "Rest."

    eng = ScriptedEngine(reply)
    f = CaTRewardFunc(RubricReward(eng, eng, judge_mode="batched", length_limit=10, guards="none"), num_generations=2)  # a yes-to-all judge
    prompt = [{"role": "user", "content": "My ankle hurts."}]
    completions = [[{"role": "assistant", "content": "Rest it."}], [{"role": "assistant", "content": "Ice it."}]]
    rewards = f(prompts=[prompt, prompt], completions=completions, completion_ids=[[1] * 5, [1] * 50])
    assert rewards == [1.0, 0.0]  # all criteria met; the second is over the length limit (-1)


class FlakyAnchor(ScriptedEngine):
    """Fails the calls whose number is in `fail` (a server down after its retries, a timeout)."""

    def __init__(self, fail):
        super().__init__(anchor_reply)
        self.fail, self.calls = set(fail), 0

    def generate(self, requests, sampling, n=1, on_result=None):
        self.calls += 1
        if self.calls in self.fail:
            raise EngineError(f"anchor call {self.calls} failed")
        return super().generate(requests, sampling, n, on_result)


def test_anchor_failure_gives_flagged_zero_rewards_then_stops_the_run(tmp_path):
    f = CaTRewardFunc(CaTReward(FlakyAnchor(fail={1, 3, 4, 5})), num_generations=4, audit_path=tmp_path / "audit.jsonl",
                      gold_column="answer", max_anchor_failures=3)
    logged = {}
    kw = dict(prompts=[P1] * 4 + [P2] * 4, completions=["\\boxed{42}"] * 4 + ["\\boxed{4}"] * 4, answer=["42"] * 4 + ["4"] * 4,
              log_metric=lambda k, v: logged.__setitem__(k, v))
    assert f(**kw) == [0.0] * 8  # call 1 fails: no gradient from this batch, the run goes on
    assert logged["cat/anchor_error_groups"] == 1.0 and "cat/reference_accuracy_vs_gold" not in logged
    assert f(**kw) == [1.0] * 8 and logged["cat/anchor_error_groups"] == 0.0  # call 2 works and resets the count
    assert f(**kw) == [0.0] * 8 and f(**kw) == [0.0] * 8  # calls 3 and 4 fail
    with pytest.raises(EngineError, match="3 reward calls in a row failed.*anchor call 5 failed"):
        f(**kw)
    rows = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert rows[0]["flags"] == ["anchor_error", "EngineError: anchor call 1 failed"] and rows[0]["reference"] is None
    assert rows[0]["answers"] == ["42"] * 4 and rows[2]["flags"] == []


def test_step_metrics_reference_against_majority_and_gold():
    """The monitoring figures on hand-made records: a reference that overrules the majority, one without an
    answer (it neither agrees nor is right), and rollouts with no answer (never a majority vote, always wrong)."""
    from catrl.integrations.trl import step_metrics
    from catrl.types import Reference, RewardRecord

    overrules = RewardRecord([0.0, 0.0, 1.0, 0.0], Reference("so 1/2", "\\frac{1}{2}", []), answers=["3", "3", "0.5", None])
    follows = RewardRecord([1.0, 1.0, 0.0, 0.0], Reference("7", "7", []), answers=[None, "7", "7", "8"])
    silent = RewardRecord([0.0] * 4, Reference("no idea", None, []), answers=["1", "2", "3", "4"], flags=["no_reference_answer"])
    m = step_metrics([overrules, follows, silent], ["0.5", "8", "1"])
    assert m["cat/reference_agrees_with_majority"] == 1 / 3  # only follows agrees (with "7")
    assert m["cat/reference_accuracy_vs_gold"] == 1 / 3  # 1/2 == 0.5 (symbolic); 7 != 8; no answer
    assert m["cat/rollout_accuracy_vs_gold"] == 3 / 12  # "0.5" in the first group, "8" in the second, "1" in the third
    assert m["cat/flagged_groups"] == 1 / 3 and m["cat/zero_variance_groups"] == 1 / 3
