"""HealthBench: loading its format (multi-turn, any language) and its grading arithmetic."""

import json

import pytest

from catrl.datasets import load_examples
from catrl.errors import InputError
from catrl.healthbench import clipped_mean, example_score, grade, summarize
from catrl.rollouts import build_request
from catrl.types import Criterion
from fakes import ScriptedEngine

ROW = {
    "prompt_id": "p1",
    "prompt": [
        {"role": "user", "content": "我头疼，怎么办？"},
        {"role": "assistant", "content": "多久了？"},
        {"role": "user", "content": "两天了，还有点发烧。"},
    ],
    "rubrics": [
        {"criterion": "Advises seeing a doctor because of fever lasting two days.", "points": 8, "tags": ["axis:accuracy"]},
        {"criterion": "Asks about neck stiffness.", "points": 2, "tags": ["axis:completeness"]},
        {"criterion": "Recommends antibiotics without examination.", "points": -6, "tags": ["axis:accuracy"]},
    ],
    "example_tags": ["theme:context_seeking"],
}


def write(tmp_path, rows):
    p = tmp_path / "hb.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def test_packaged_healthbench_sets():
    full, hard = load_examples("healthbench"), load_examples("healthbench_hard20")
    assert len(full) == 500 and len(hard) == 20
    assert all(e.criteria and e.messages and e.messages[-1]["role"] == "user" for e in full + hard)
    assert any(c.points < 0 for e in full for c in e.criteria)


def test_multiturn_non_english_conversation_is_sent_whole(tmp_path):
    (ex,) = load_examples(str(write(tmp_path, [ROW])), {"question": "prompt", "id": "prompt_id"})
    assert ex.question == "两天了，还有点发烧。" and len(ex.messages) == 3 and ex.tags == ["theme:context_seeking"]
    req = build_request(ex, "solve")
    assert [m["content"] for m in req.messages] == [m["content"] for m in ROW["prompt"]]


def test_bad_rubric_item_names_file_line_and_field(tmp_path):
    bad = dict(ROW, rubrics=[{"criterion": "x", "points": "ten"}])
    p = write(tmp_path, [ROW, bad])
    with pytest.raises(InputError, match=r"hb.jsonl:2: field 'rubrics', item 0"):
        load_examples(str(p), {"question": "prompt", "id": "prompt_id"})
    badmsg = dict(ROW, prompt=[{"role": "robot", "content": "hi"}])
    with pytest.raises(InputError, match=r"hb.jsonl:1: field 'prompt', message 0"):
        load_examples(str(write(tmp_path, [badmsg])), {"question": "prompt", "id": "prompt_id"})


def test_example_score_counts_negative_items_when_met():
    crit = [Criterion(c["criterion"], c["points"]) for c in ROW["rubrics"]]
    assert example_score(crit, [True, True, False]) == 1.0
    assert example_score(crit, [True, False, True]) == pytest.approx((8 - 6) / 10)
    assert example_score(crit, [False, False, True]) == pytest.approx(-0.6)  # clipped only in the mean
    assert example_score([Criterion("bad", -3)], [True]) is None


def test_clipped_mean_and_bootstrap():
    out = clipped_mean([-0.6, -0.2, 0.1])
    assert out["score"] == 0.0 and out["n"] == 3
    out = clipped_mean([0.2, 0.4, 0.6, 0.8])
    assert out["score"] == pytest.approx(0.5) and 0 < out["bootstrap_std"] < 0.2


def test_grade_with_a_scripted_grader_and_tag_scores(tmp_path):
    (ex,) = load_examples(str(write(tmp_path, [ROW])), {"question": "prompt", "id": "prompt_id"})

    def grader(prompt):
        # the grader sees the whole conversation, the points, and the negative-item instruction
        assert "两天了" in prompt and "undesirable behaviour" in prompt
        item = prompt[prompt.rindex("<criterion") :]
        met = "fever" in item or "antibiotics" in item
        return f"<verdict><reason>r</reason><met>{'yes' if met else 'no'}</met></verdict>"

    (g,) = grade(ScriptedEngine(grader), [ex], ["Please see a doctor; take antibiotics."])
    assert [v.met for v in g.verdicts] == [True, False, True] and g.score == pytest.approx(0.2)
    s = summarize([ex], [g])
    assert s["overall"]["score"] == pytest.approx(0.2)
    assert s["tags"]["theme:context_seeking"]["score"] == pytest.approx(0.2)
    assert s["tags"]["axis:accuracy"]["score"] == pytest.approx((8 - 6) / 8)
    assert s["tags"]["axis:completeness"]["score"] == 0.0 and s["unjudged"] == 0


def test_grade_rejects_non_healthbench_examples():
    with pytest.raises(InputError, match="not a HealthBench example"):
        grade(ScriptedEngine(), load_examples("gsm8k", limit=1), ["x"])
