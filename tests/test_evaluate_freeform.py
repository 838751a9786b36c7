"""The free-form evaluation: orchestration with scripted engines, and one real run through the CLI."""

import json
import subprocess
import sys

import pytest

from catrl.evaluate_freeform import FreeformConfig, run_freeform_eval, summarize_freeform, write_freeform
from catrl.report.html_freeform import write_freeform_html
from fakes import ScriptedEngine


def reply(prompt: str) -> str:
    if "<choice>" in prompt:
        return "<choice>2</choice>"
    if "grading rubric" in prompt:
        return "<rubric>" + "".join(f"<criterion>The response says thing {i}.</criterion>" for i in range(5)) + "</rubric>"
    if "<criteria>" in prompt:  # batched judge: the first two criteria met
        return "<verdicts>" + "".join(f'<verdict id="{i}"><met>{"yes" if i <= 2 else "no"}</met></verdict>' for i in range(1, 6)) + "</verdicts>"
    if "against one criterion" in prompt:  # per-criterion judge: only "thing 0" met
        crit = prompt[prompt.index("<criterion>") : prompt.index("</criterion>")]
        return f"<verdict><reason>r</reason><met>{'yes' if 'thing 0' in crit else 'no'}</met></verdict>"
    if "equivalent to the reference" in prompt:
        return "<verdict><met>yes</met></verdict>"
    if "rubric item written by a physician" in prompt:  # HealthBench grader: met when the response says "doctor"
        response = prompt[prompt.index("<response>") : prompt.index("</response>")]
        return f"<verdict><reason>r</reason><met>{'yes' if 'doctor' in response else 'no'}</met></verdict>"
    if "combine these candidates" in prompt:
        return "See a doctor; rest."
    return "Rest at home."


def test_freeform_eval_with_scripted_engines(tmp_path):
    eng = ScriptedEngine(reply)
    cfg = FreeformConfig(dataset="healthbench_hard20", limit=2, g=3, methods=("single", "min_ppl", "self_bon", "mutual", "cat"), validity=True,
                         judge_mode="batched")
    results = run_freeform_eval(eng, eng, eng, cfg)
    assert len(results) == 2 and all(len(r.rollouts) == 3 for r in results)
    for r in results:
        assert r.methods["self_bon"]["index"] == 1 and r.methods["cat"]["index"] is None
        assert r.reference["score"] is not None and r.reference["score"] >= r.rollouts[0]["score"]
        assert set(r.rollouts[0]["rewards"]) == {"self_rubric", "question_rubric", "judge_equiv"}
        assert r.rollouts[0]["rewards"]["self_rubric"] == pytest.approx(0.4)
    summary = summarize_freeform(results)
    assert set(summary["methods"]) >= {"single", "cat", "rollout_mean"} and "cat-single" in summary["paired"]
    assert set(summary["validity"]) == {"self_rubric", "question_rubric", "judge_equiv"}
    # the anchor's synthesis prompt never carries the conversation
    convs = [r.messages[-1]["content"][:60] for r in results]
    for req in eng.requests:
        text = req.messages[-1]["content"]
        if "combine these candidates" in text:
            assert not any(c in text for c in convs)
    write_freeform(results, summary, tmp_path)
    page = write_freeform_html([json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()], summary, {},
                               tmp_path / "report.html", "t")
    assert "CaT response" in page.read_text()


def test_validity_judges_the_self_rubric_in_extra_modes_and_reports_agreement():
    eng = ScriptedEngine(reply)
    cfg = FreeformConfig(dataset="healthbench_hard20", limit=2, g=2, methods=("single", "cat"), validity=True,
                         judge_mode="batched", validity_extra_modes=("per_criterion",))
    results = run_freeform_eval(eng, eng, eng, cfg)
    roll = results[0].rollouts[0]
    assert roll["rewards"]["self_rubric"] == pytest.approx(0.4)  # batched: 2 of 5
    assert roll["rewards"]["self_rubric_per_criterion"] == pytest.approx(0.2)  # per criterion: 1 of 5
    assert roll["rubric_verdicts"]["self_rubric"] == [True, True, False, False, False]
    summary = summarize_freeform(results)
    assert "self_rubric_per_criterion" in summary["validity"]
    # verdicts differ on criterion 2 only: 4 of 5 agree, over 2 conversations x 2 rollouts
    assert summary["mode_agreement"]["self_rubric_per_criterion"] == {"pairs": 20, "agreement": pytest.approx(0.8)}


SMALL_HB = {
    "prompt_id": "ankle",
    "prompt": [{"role": "user", "content": "I twisted my ankle and it is swollen. What should I do?"}],
    "rubrics": [
        {"criterion": "Recommends rest, ice, compression and elevation.", "points": 5, "tags": ["axis:accuracy"]},
        {"criterion": "Advises seeing a clinician if the patient cannot bear weight.", "points": 5, "tags": ["axis:completeness"]},
        {"criterion": "Recommends walking it off without any rest.", "points": -5, "tags": ["axis:accuracy"]},
    ],
    "example_tags": ["theme:emergency_referrals"],
}


@pytest.mark.real_model
def test_catrl_eval_healthbench_format_on_the_smallest_model(smol_path, tmp_path):
    data = tmp_path / "hb.jsonl"
    data.write_text(json.dumps(SMALL_HB) + "\n")
    out = tmp_path / "hb"
    cmd = [sys.executable, "-m", "catrl", "eval", "--dataset", str(data), "--field", "question=prompt", "--field", "id=prompt_id",
           "-g", "2", "--max-tokens", "40", "--anchor-max-tokens", "64", "--model", "smollm2-135m", "--max-seqs", "8", "--ctx", "2048",
           "--methods", "single,min_ppl,self_bon,mutual,cat", "--validity", "--judge-max-tokens", "48", "--no-cache", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conversations"] == 1 and set(summary["methods"]) >= {"single", "min_ppl", "self_bon", "mutual", "cat"}
    assert set(summary["validity"]) == {"self_rubric", "question_rubric", "judge_equiv"}
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(row["rollouts"][0]["verdicts"]) == 3 and len(row["reference"]["verdicts"]) == 3
    assert all(set(r["rewards"]) == {"self_rubric", "question_rubric", "judge_equiv"} for r in row["rollouts"])
    assert "physician score" in proc.stdout and (out / "report.html").exists()
