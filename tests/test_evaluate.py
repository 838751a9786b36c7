"""The evaluation harness end to end with a scripted policy and anchor (orchestration only; the real
model run is in test_real_cat.py)."""

import json
from dataclasses import asdict

import pytest
from rich.console import Console

from catrl.evaluate import EvalConfig, answer_positions, reference_support, run_eval, summarize, write_results
from catrl.metrics import accuracy
from catrl.report.html import write_html
from catrl.report.plots import plot_sweep, sweep_single_line
from catrl.report.table import analyses_table
from catrl.types import Completion, TokenLogprob
from fakes import ScriptedEngine


class RolloutEngine(ScriptedEngine):
    """Policy: for GSM8K question 0 (gold 18) most rollouts say 16; the anchor answers 18."""

    def generate(self, requests, sampling, n=1, on_result=None):
        out = []
        for i, r in enumerate(requests):
            self.requests.append(r)
            text = r.messages[-1]["content"]
            if "<candidate" in text and "<choice>" not in text:  # the anchor's synthesis prompt
                comps = [Completion("Careful: 16 - 3 - 4 = 9 eggs, 9 * 2 = \\boxed{18}", "stop", 10, 5)]
            elif "<choice>" in text:
                comps = [Completion("<choice>1</choice>", "stop", 10, 5)]
            else:
                answers = ["16", "16", "18", "16", "20", "16", "18", "16"][:n]
                comps = [Completion(f"... \\boxed{{{a}}}", "stop", 10, 3, [TokenLogprob("x", -0.1 * (k + 1))]) for k, a in enumerate(answers)]
            if on_result:
                on_result(i, comps)
            out.append(comps)
        return out


def test_eval_pipeline_writes_results_summary_plot_and_html(tmp_path):
    eng = RolloutEngine()
    cfg = EvalConfig(dataset="gsm8k", limit=3, methods=("single", "majority", "min_ppl", "self_bon", "usc", "mutual", "cat"),
                     method_limits={"mutual": 2}, g_sweep=(1, 2, 4, 8))
    results = run_eval(eng, eng, cfg)
    r0 = results[0]
    assert r0.gold == "18" and r0.majority["answer"] == "16"
    assert r0.methods["cat"]["answer"] == "18" and r0.methods["cat"]["correct"]
    assert not r0.methods["majority"]["correct"] and r0.methods["single"]["answer"] == "16"
    assert "mutual" in results[1].methods and "mutual" not in results[2].methods
    assert set(r0.sweep) == {"1", "2", "4", "8"}
    # the question never reaches the anchor's synthesis prompt
    for req in eng.requests:
        text = req.messages[-1]["content"]
        if "<candidate" in text and "<choice>" not in text and "Other solutions" not in text:
            assert "Janet" not in text
    s = summarize(results)
    assert s["methods"]["cat"]["correct"] == 1 and s["methods"]["majority"]["correct"] == 0
    assert s["analyses"]["disagree_count"] == 3 and s["analyses"]["cat_no_answer_count"] == 0
    assert s["analyses"]["all_rollouts_wrong_count"] == 2 and s["analyses"]["any_rollout_right_share"] == pytest.approx(1 / 3)  # only q0 has an 18
    assert s["paired"]["cat-majority"]["a_only"] == 1
    # every reference says 18, which two of eight rollouts hold: CaT sides with a minority, right on q0 only
    assert s["analyses"]["cat_answer_minority_count"] == 3 and s["analyses"]["cat_accuracy_answer_minority"]["correct"] == 1
    assert s["analyses"]["cat_answer_none_count"] == 0
    write_results(results, s, tmp_path)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["reference"]["answer"] == "18"
    png = plot_sweep(s, tmp_path / "g.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sweep_single_line(s) == s["methods"]["single"]["mean"]  # same questions as the sweep
    narrower = {**s, "sweep": {g: {m: {**a, "n": 2} for m, a in v.items()} for g, v in s["sweep"].items()}}
    assert sweep_single_line(narrower) is None  # a sweep on fewer questions draws no 200-question line
    page = write_html([json.loads(x) for x in lines], s, tmp_path / "r.html", "t", "g.png").read_text()
    assert "Janet" in page and "&lt;candidate" in page  # the anchor prompt is shown, escaped


@pytest.mark.parametrize("answer, rollouts, majority, kind", [
    ("18", ["16", "16", "18"], "16", "minority"),
    ("18.0", ["18", "18", "16"], "18", "majority"),  # equivalence, not string equality
    ("\\frac{1}{2}", ["0.5", "1"], "1", "minority"),
    ("7", ["16", None, "18"], "16", "none"),
    (None, ["16"], "16", "no_answer"),
    ("7", [None, None], None, "none"),
])
def test_reference_support_says_which_rollouts_hold_the_references_answer(answer, rollouts, majority, kind):
    assert reference_support(answer, rollouts, majority) == kind


def test_a_selector_engine_runs_the_policys_judgments_and_the_policy_only_samples():
    policy, reader = RolloutEngine(), RolloutEngine()
    cfg = EvalConfig(dataset="gsm8k", limit=2, methods=("single", "min_ppl", "self_bon", "usc", "mutual", "cat"), g_sweep=())
    results = run_eval(policy, reader, cfg, selector=reader)
    assert len(policy.requests) == 2 and not policy.scored  # the rollouts, nothing else
    texts = [r.messages[-1]["content"] for r in reader.requests]
    assert sum("<choice>" in t for t in texts) == 4 and len(reader.scored) == 2 * 8  # self-BoN + USC; mutual scoring
    assert all(set(r.methods) == set(cfg.methods) for r in results)


def test_the_analyses_table_and_page_show_an_accuracy_over_no_questions_as_a_dash(tmp_path):
    summary = {"methods": {}, "paired": {}, "analyses": {"empty": asdict(accuracy([])), "two": asdict(accuracy([True, False]))}}
    console = Console(width=120, record=True)
    console.print(analyses_table(summary))
    text = console.export_text()
    assert "- (n=0)" in text and "nan" not in text and "0.500 (n=2, [" in text
    page = write_html([], summary, tmp_path / "r.html", "t").read_text()
    assert "- (n=0)" in page and "nan" not in page and "0.500 (n=2, 95% CI [" in page


def test_answer_positions_say_which_candidates_the_reference_repeats():
    assert answer_positions("18", ["16", "18.0", None, "18"]) == [False, True, False, True]
    assert answer_positions(None, ["16"]) is None


def test_the_position_analysis_shows_an_anchor_that_repeats_the_last_candidate():
    from catrl.evaluate import QuestionResult

    def result(answers, ref):
        return QuestionResult(id="q", question="", gold="1", rollouts=[{"answer": a, "correct": a == "1"} for a in answers],
                              majority={"answer": "1"}, reference=None, methods={"cat": {"answer": ref, "correct": ref == "1"}})

    s = summarize([result(["1", "1", "1", "2"], "2"), result(["1", "1", "3", "4"], "4"), result(["1", "1", "1", "1"], "1"),
                   result(["1", "1", "1", "5"], None)])
    assert s["analyses"]["cat_answer_held_by_candidate_share"] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert s["analyses"]["cat_lone_answer_candidate_count"] == [0, 0, 0, 2]
