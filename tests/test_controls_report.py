"""The controls report's pure tallies (bench/cat_rl_controls.py): payments split by code, and arms against a control arm."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import cat_rl_controls as controls  # noqa: E402


def test_paid_by_code_counts_paid_rollouts_with_and_without_a_python_block():
    records = [{"rollouts": ["```python\nprint(2)\n```\n2", "so 2", "it is 3"], "rewards": [1.0, 0.0, 1.0]},
               {"rollouts": ["```python\nx = 1\n```"], "rewards": [0.0]}]
    assert controls.paid_by_code(records) == {"code": [1, 2], "no_code": [1, 2]}


def test_against_pairs_each_finished_arm_with_the_control_arm_on_the_same_questions():
    finals = {"random": {"heldout": [False, False, True, False]},
              "cat": {"heldout": [True, True, True, False], "train": [True]}}
    out = controls.against(finals, "random", tuple(controls.ARMS))
    assert set(out) == {"cat"}  # no train row: the random arm has none to pair with
    assert set(out["cat"]) == {"heldout"}
    assert out["cat"]["heldout"]["diff"] == pytest.approx(0.5)
    assert (out["cat"]["heldout"]["a_only"], out["cat"]["heldout"]["b_only"]) == (2, 0)


def test_against_majority_compares_only_the_cat_arms_that_finished():
    finals = {"majority": {"heldout": [True, False, True, True]},
              "random": {"heldout": [False, False, False, False]},
              "cat": {"heldout": [True, True, False, True]}}
    out = controls.against(finals, "majority", ("cat", "cat_self"))
    assert set(out) == {"cat"}  # random is not a CaT arm; cat_self has not finished
    d = out["cat"]["heldout"]
    assert d["diff"] == pytest.approx(0.0)
    assert (d["a_only"], d["b_only"]) == (1, 1)


def test_against_cat_pairs_the_self_anchored_arm_with_the_frozen_anchor_arm():
    finals = {"cat": {"heldout": [True, False, False, True], "train": [True, True]},
              "cat_self": {"heldout": [True, True, False, False], "train": [False, True]}}
    out = controls.against(finals, "cat", ("cat_self",))
    assert set(out) == {"cat_self"}
    assert out["cat_self"]["heldout"]["diff"] == pytest.approx(0.0)
    assert out["cat_self"]["train"]["diff"] == pytest.approx(-0.5)
    assert (out["cat_self"]["train"]["a_only"], out["cat_self"]["train"]["b_only"]) == (0, 1)
