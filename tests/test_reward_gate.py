"""The control rewards (random, format) and the reward-accuracy gate's grading."""

from __future__ import annotations

import pytest

from catrl.control_rewards import FormatReward, RandomReward, bernoulli
from catrl.errors import InputError
from catrl.integrations.trl import CaTRewardFunc, step_metrics
from catrl.reward_gate import add_reward, advantage_points_right, grade_group, reward_accuracy, score_gate
from catrl.rewards import MajorityReward
from catrl.types import Reference, RewardRecord

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


@pytest.mark.real_model
@pytest.mark.slow
def test_gate_on_real_rollouts_and_a_real_anchor(smol_engine):
    """Two real groups from SmolLM2, scored by a real CaT anchor and the anchor-free rewards; the counts add up."""
    from catrl.rewards import CaTReward
    from catrl.types import ChatRequest, Sampling
    from catrl.verify import extract_answer

    qs = [("What is 3 + 4? End with \\boxed{answer}.", "7"), ("What is 10 - 6? End with \\boxed{answer}.", "4")]
    comps = smol_engine.generate([ChatRequest.user(q) for q, _ in qs], Sampling(temperature=0.8, max_tokens=48, seed=1), n=4)
    rollouts = [[c.text for c in g] for g in comps]
    groups = [grade_group(f"q{i}", gold, [extract_answer(r) for r in rs]) for i, ((_, gold), rs) in enumerate(zip(qs, rollouts))]
    rewards = {"cat": CaTReward(smol_engine, sampling=Sampling(temperature=0.0, max_tokens=64, seed=0)), "majority": MajorityReward(),
               "random": RandomReward(), "format": FormatReward()}
    for name, reward in rewards.items():
        score_gate(groups, rollouts, name, reward, chunk=1)
    for name in rewards:
        acc = reward_accuracy(groups, name)
        assert (acc.groups, acc.rollouts) == (2, 8) and acc.rewarded_right <= min(acc.rewarded, acc.right)
        assert 0.0 <= acc.accuracy <= 1.0 and acc.signal_right <= acc.signal_groups
    assert all(g.labels["random"] is None and g.label_right["cat"] in (True, False) for g in groups)
