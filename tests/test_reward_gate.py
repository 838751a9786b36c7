"""The control rewards (random, format) and the reward-accuracy gate's grading."""

from __future__ import annotations

import pytest

from catrl.control_rewards import FormatReward, RandomReward, bernoulli
from catrl.errors import InputError
from catrl.integrations.trl import CaTRewardFunc, step_metrics
from catrl.reward_gate import add_reward, advantage_points_right, grade_group, reward_accuracy, score_gate
from catrl.rewards import MajorityReward
from catrl.types import Reference, RewardRecord
from fakes import ScriptedEngine

GROUP = ["so \\boxed{12}", "I get \\boxed{12}", "\\boxed{7}", "no idea"]


def test_random_reward_is_a_reproducible_coin_per_rollout():
    a = RandomReward(seed=3).score_groups([None], [GROUP])[0]
    b = RandomReward(seed=3).score_groups([None], [GROUP])[0]
    assert a.rewards == b.rewards and set(a.rewards) <= {0.0, 1.0} and a.flags == ["control:random"]
    assert a.reference.answer is None  # a control has no label
    coins = [bernoulli(0, [f"r{i}"], 0, 0.5) for i in range(2000)]  # fair, and independent of the text's content
    assert 0.45 < sum(coins) / len(coins) < 0.55
    assert RandomReward(p=0.0).score_groups([None], [GROUP])[0].rewards == [0.0] * 4
    assert RandomReward(p=1.0).score_groups([None], [GROUP])[0].rewards == [1.0] * 4
    with pytest.raises(InputError, match="p must be in"):
        RandomReward(p=2)
    with pytest.raises(InputError, match="group 0: empty group"):
        RandomReward().score_groups([None], [[]])


def test_format_reward_pays_any_stated_answer():
    rec = FormatReward().score_groups([None], [GROUP])[0]
    assert rec.rewards == [1.0, 1.0, 1.0, 0.0] and rec.rollout_flags[3] == ["no_answer"]


def test_trl_adapter_names_the_controls_and_logs_no_reference_accuracy_for_them():
    assert CaTRewardFunc(RandomReward(), 4).__name__ == "random" and CaTRewardFunc(FormatReward(), 4).__name__ == "format"
    rec = FormatReward().score_groups([None], [GROUP])[0]
    m = step_metrics([rec], ["12"])
    assert "cat/reference_accuracy_vs_gold" not in m and m["cat/rollout_accuracy_vs_gold"] == 0.5


def test_gate_grades_precision_recall_accuracy_and_label():
    g = grade_group("q1", "12", ["12", "12", "7", None])
    assert g.correct == [True, True, False, False]
    # a wrong label (7) pays the wrong rollout and none of the right ones; it is still right about the rollout with no answer
    wrong = RewardRecord(rewards=[0.0, 0.0, 1.0, 0.0], reference=Reference("...", "7", prompt=[]), flags=[])
    add_reward(g, "cat", wrong)
    add_reward(g, "majority", MajorityReward().score_groups([None], [GROUP])[0])
    add_reward(g, "format", FormatReward().score_groups([None], [GROUP])[0])
    cat, maj, fmt = (reward_accuracy([g], n) for n in ("cat", "majority", "format"))
    assert (cat.precision, cat.recall, cat.accuracy, cat.label_accuracy) == (0.0, 0.0, 0.25, 0.0)
    assert (maj.precision, maj.recall, maj.accuracy, maj.label_accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert fmt.precision == pytest.approx(2 / 3) and fmt.recall == 1.0 and fmt.label_accuracy is None  # a control has no label
    assert (cat.signal_groups, cat.signal_right, maj.signal_right) == (1, 0, 1)


def test_advantage_direction():
    assert advantage_points_right([1, 0, 0], [True, False, False])
    assert not advantage_points_right([1, 0], [False, True])
    assert not advantage_points_right([1, 1], [True, True])  # a flat group has no direction


def test_score_gate_scores_in_chunks_with_progress():
    groups = [grade_group(f"q{i}", "12", [None] * 4) for i in range(5)]
    seen = []
    score_gate(groups, [GROUP] * 5, "format", FormatReward(), chunk=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)] and all(g.rewards["format"] == [1.0, 1.0, 1.0, 0.0] for g in groups)


def test_support_rows_come_from_their_base_whatever_the_order(monkeypatch):
    from types import SimpleNamespace

    from catrl import reward_gate
    from catrl.reward_gate import run_gate

    cfg = SimpleNamespace(policy="p", g=3, match="symbolic", seed=0)
    monkeypatch.setattr(reward_gate, "gate_examples", lambda cfg, n: [SimpleNamespace(id=str(i), gold="42") for i in range(n)])
    monkeypatch.setattr(reward_gate, "sample_groups", lambda policy, ex, cfg, progress=None: [["\\boxed{42}", "\\boxed{41}", "\\boxed{40}"],
                                                                                            ["\\boxed{42}", "\\boxed{42}", "\\boxed{40}"]])
    monkeypatch.setattr("catrl.datasets.gold_answer", lambda ds, gold: gold)
    cfg.dataset = "gsm8k"
    graded, _ = run_gate(cfg, ["majority+support=2", "majority"], 2, lambda role, model: ScriptedEngine())
    assert [g.rewards["majority"] for g in graded] == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert [g.rewards["majority+support=2"] for g in graded] == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert graded[0].flags["majority+support=2"] == ["uncorroborated:1<2"] and graded[1].flags["majority+support=2"] == []


def test_gate_reward_specs_are_checked_before_any_model_loads():
    from catrl.reward_gate import parse_gate_rewards

    assert parse_gate_rewards("cat, cat@qwen2.5-coder-1.5b/cluster,majority") == ["cat", "cat@qwen2.5-coder-1.5b/cluster", "majority"]
    with pytest.raises(InputError, match="unknown vote, majority@x"):
        parse_gate_rewards("cat,vote,majority@x")
    with pytest.raises(InputError, match="rewards: cat@m/nonsense"):
        parse_gate_rewards("cat@m/nonsense")
    assert parse_gate_rewards("cat+support=2,majority+support=3,cat@m/cluster+support=2") == [
        "cat+support=2", "majority+support=3", "cat@m/cluster+support=2"]
    for bad in ("random+support=2", "cat+support=0", "cat+support=x", "format+support=1", "cat+support=\u00b2"):
        with pytest.raises(InputError, match=r"\+support=K takes"):
            parse_gate_rewards(bad)
    with pytest.raises(InputError, match="rewards: cat\\+support=9: min_support must be .* \\(8\\)"):
        parse_gate_rewards("cat+support=9", g=8)
    # an estimator's own comma-separated parameters stay with it; a reward after it starts a new name
    assert parse_gate_rewards("cat@m/recursive:m=2,t=1,majority,cat@m/permutation:k=2,seed=1+support=2,cat+support=2") == [
        "cat@m/recursive:m=2,t=1", "majority", "cat@m/permutation:k=2,seed=1+support=2", "cat+support=2"]


@pytest.mark.real_model
def test_catrl_gate_on_a_real_policy_and_anchor(tmp_path, smol_path):
    """`catrl gate` end to end on SmolLM2: real rollouts from the initial policy, a real CaT anchor, the anchor-free rewards."""
    import json

    from typer.testing import CliRunner

    from catrl.cli import app

    args = ["gate", "-s", "policy=smollm2-135m", "-s", "g=4", "-s", "max_completion_tokens=32", "-s", "anchor_max_tokens=48",
            "-s", "threads=2", "--groups", "2", "--rewards", "cat,cat+support=2,majority,random,format", "-o", str(tmp_path / "gate")]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "gate" / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["rewards"]}
    assert list(rows) == ["cat", "cat+support=2", "majority", "random", "format"] and all(r["rollouts"] == 8 and r["groups"] == 2 for r in rows.values())
    assert all(r["rewarded_right"] <= min(r["rewarded"], r["right"]) and r["signal_right"] <= r["signal_groups"] for r in rows.values())
    assert rows["random"]["label_accuracy"] is None and rows["cat"]["label_accuracy"] is not None  # a control has no label
    groups = [json.loads(x) for x in (tmp_path / "gate" / "groups.jsonl").read_text().splitlines()]
    assert len(groups) == 2 and all(set(g["rewards"]) == set(rows) and len(g["correct"]) == 4 for g in groups)
    for g in groups:  # corroboration only ever takes away the pay of a group where fewer than 2 rollouts were paid
        paid = sum(r > 0 for r in g["rewards"]["cat"])
        assert g["rewards"]["cat+support=2"] == (g["rewards"]["cat"] if paid != 1 else [0.0] * 4)
        assert (paid == 1) == any(f.startswith("uncorroborated") for f in g["flags"]["cat+support=2"])
    assert (tmp_path / "gate" / "gate.png").stat().st_size > 0 and "precision" in res.output
    bad = CliRunner().invoke(app, ["gate", "-s", "policy=smollm2-135m", "--rewards", "cat,vote"])
    assert bad.exit_code != 0 and "unknown vote" in bad.output
