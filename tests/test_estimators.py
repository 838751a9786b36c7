"""Reference estimators: what each sends the anchor, how each picks, its bad-input errors, and one
real-model run of every estimator that calls an anchor."""

import math

import pytest

from catrl.errors import InputError
from catrl.estimators import (REGISTRY, check_estimator, cyclic_orders, group_seed, medoid, parse_estimator, representative, softmax_weights,
                              default_estimator, split_specs, vote)
from catrl.rewards import CaTReward, RubricReward
from catrl.types import Completion, Sampling, TokenLogprob
from tests.fakes import ScriptedEngine

QUESTION = "How many apples are in 4 boxes of 3?"


def group(*answers):
    return [f"work {i}: \\boxed{{{a}}}" if a is not None else f"no answer {i}" for i, a in enumerate(answers)]


def comp(text, nll, finish="stop"):
    return Completion(text, finish, 5, 3, logprobs=[TokenLogprob("t", -nll)] * 3)


def test_cyclic_orders_are_balanced():
    orders = cyclic_orders(list(range(8)), 4)
    assert len(orders) == 4
    assert len({o[-1] for o in orders}) == 4  # four different candidates sit last
    for pos in range(8):
        assert len({o[pos] for o in orders}) == 4
    full = cyclic_orders([3, 1, 0, 2], 4)
    for pos in range(4):
        assert sorted(o[pos] for o in full) == [0, 1, 2, 3]  # k = G: every candidate in every position once


def test_group_seed_depends_on_the_group_not_on_the_call():
    assert group_seed(0, ["a", "b"]) == group_seed(0, ["a", "b"])
    assert group_seed(0, ["a", "b"]) != group_seed(0, ["b", "a"])
    assert group_seed(0, ["a", "b"]) != group_seed(1, ["a", "b"])


def test_shuffled_synthesis_records_its_order_and_sends_that_order():
    anchor = ScriptedEngine()
    texts = group(1, 2, 3, 4, 5, 6, 7, 8)
    ref = parse_estimator("synthesis:shuffle=1").estimate(anchor, texts)
    prompt = anchor.requests[0].messages[-1]["content"]
    assert sorted(ref.order) == list(range(8)) and ref.order != list(range(8))
    positions = [prompt.index(texts[i]) for i in ref.order]
    assert positions == sorted(positions)
    assert ref.estimator == {"name": "synthesis", "seed": 0, "screen": True, "shuffle": True}
    assert ref.calls[0]["order"] == ref.order and ref.calls[0]["prompt_tokens"] == 10


def test_paper_synthesis_keeps_the_given_order():
    anchor = ScriptedEngine()
    texts = group(1, 2, 3)
    ref = parse_estimator("synthesis").estimate(anchor, texts)
    assert ref.order == [0, 1, 2]


def test_permutation_votes_over_syntheses_and_breaks_ties_by_shift_order():
    answers = iter(["7", "9", "9", "7"])
    anchor = ScriptedEngine(reply=lambda text: f"so \\boxed{{{next(answers)}}}")
    ref = parse_estimator("permutation:k=4").estimate(anchor, group(1, 2, 3, 4, 5, 6, 7, 8))
    assert len(anchor.requests) == 4 and len({r.messages[-1]["content"] for r in anchor.requests}) == 4
    assert ref.answer == "7"  # 2 votes each: the answer the first shift reached wins
    assert [c["answer"] for c in ref.calls] == ["7", "9", "9", "7"]
    assert "syntheses_disagree:2" in ref.flags


def test_cluster_view_shows_one_representative_per_answer_with_support_majority_last():
    anchor = ScriptedEngine(reply=lambda text: "\\boxed{5}")
    comps = [comp("a \\boxed{5}", 1.0), comp("b \\boxed{5}", 0.2), comp("c \\boxed{6}", 0.5), comp("d \\boxed{5}", 0.1, "length")]
    ref = parse_estimator("cluster").estimate(anchor, comps)
    prompt = anchor.requests[0].messages[-1]["content"]
    assert 'support="1 of 4"' in prompt and 'support="3 of 4"' in prompt
    assert prompt.index("c \\boxed{6}") < prompt.index("b \\boxed{5}")  # best-supported answer last
    assert "a \\boxed{5}" not in prompt and "d \\boxed{5}" not in prompt  # one representative per answer
    assert ref.order == [2, 1] and ref.answer == "5"
    parse_estimator("cluster:order=majority_first").estimate(anchor, comps)
    first = anchor.requests[1].messages[-1]["content"]
    assert first.index("b \\boxed{5}") < first.index("c \\boxed{6}")  # best-supported answer first


def copy_candidate(prompt, which):
    """An anchor that copies the first or last representative it reads: a pure position bias."""
    blocks = [b.split("</candidate>", 1)[0] for b in prompt.split("<candidate id=")[1:]]
    return "\\boxed" + blocks[which].rsplit("\\boxed", 1)[1]


def test_cluster_both_overrules_the_vote_only_when_two_readings_in_reversed_orders_agree():
    comps = group(5, 5, 6, 5)  # the vote: 5
    both = "cluster:order=both"
    # a first-copier reads 5 first (majority_first): that settles it, no second call
    eng = ScriptedEngine(reply=lambda text: copy_candidate(text, 0))
    ref = parse_estimator(both).estimate(eng, comps)
    assert len(eng.requests) == 1 and ref.answer == "5" and ref.flags == [] and ref.finish_reason != "orders_disagree"
    # a last-copier says 6, then 5 with the order reversed: the vote, flagged, with both readings kept
    eng = ScriptedEngine(reply=lambda text: copy_candidate(text, -1))
    ref = parse_estimator(both).estimate(eng, comps)
    shown = [r.messages[-1]["content"] for r in eng.requests]
    assert shown[0].index("\\boxed{5}") < shown[0].index("\\boxed{6}") and shown[1].index("\\boxed{6}") < shown[1].index("\\boxed{5}")
    assert ref.answer == "5" and ref.flags == ["orders_disagree"] and [c["answer"] for c in ref.calls] == ["6", "5"]
    assert ref.finish_reason == "orders_disagree" and ref.estimator["order"] == "both" and ref.text == comps[0]
    # an anchor that reaches 6 whatever the order overrules the vote; a new answer both readings reach counts too
    for said in ("6", "7"):
        ref = parse_estimator(both).estimate(ScriptedEngine(reply=lambda text, said=said: f"so \\boxed{{{said}}}"), comps)
        assert ref.answer == said and ref.flags == [] and len(ref.calls) == 2
    # a reading with no answer never overrules; unanimous groups still skip the anchor
    ref = parse_estimator(both).estimate(ScriptedEngine(reply=lambda text: "unsure"), comps)
    assert ref.answer == "5" and ref.flags == ["reading_no_answer"] and len(ref.calls) == 1
    unanimous = ScriptedEngine()
    assert parse_estimator(both).estimate(unanimous, group(4, 4)).flags == ["unanimous"] and unanimous.requests == []


def test_cluster_both_sends_the_same_prompts_as_the_two_single_orders():
    """So the single-order runs' cached calls make `both` free (bench/reference_estimators.py)."""
    comps = group(3, 5, 6, 5, 6, 9)
    seen = {}
    for spec in ("cluster:order=majority_first", "cluster:order=support", "cluster:order=both"):
        eng = ScriptedEngine(reply=lambda text: "\\boxed{42}")
        parse_estimator(spec).estimate(eng, comps)
        seen[spec] = [r.messages for r in eng.requests]
    assert seen["cluster:order=both"] == seen["cluster:order=majority_first"] + seen["cluster:order=support"]


def test_representative_prefers_finished_then_confident():
    comps = [comp("x", 0.1, "length"), comp("y", 0.9), comp("z", 0.3)]
    assert representative([0, 1, 2], comps) == 2
    assert representative([0, 1], ["p", "q"]) == 0


def test_cluster_view_skips_the_anchor_when_unanimous_and_falls_back_when_no_answers():
    anchor = ScriptedEngine()
    ref = parse_estimator("cluster").estimate(anchor, group(4, 4, 4))
    assert anchor.requests == [] and ref.answer == "4" and ref.flags == ["unanimous"]
    ref = parse_estimator("cluster").estimate(anchor, group(None, None))
    assert len(anchor.requests) == 1 and "no_candidate_answers" in ref.flags and ref.answer == "42"


def test_recursive_makes_g_candidates_per_round_from_subsets_of_m():
    anchor = ScriptedEngine(reply=lambda text: "\\boxed{3}")
    ref = parse_estimator("recursive:m=2,t=2").estimate(anchor, group(1, 2, 3, 4))
    assert len(anchor.requests) == 8
    assert all(r.messages[-1]["content"].count("<candidate id=") == 2 for r in anchor.requests)
    assert ref.answer == "3" and [c["round"] for c in ref.calls] == [0] * 4 + [1] * 4


def test_confidence_vote_weights_by_logprobs_and_flags_missing_ones():
    comps = [comp("\\boxed{1}", 2.0), comp("\\boxed{1}", 2.0), comp("\\boxed{2}", 0.1)]
    assert parse_estimator("confidence_vote:tau=0.1").estimate(None, comps).answer == "2"
    assert parse_estimator("confidence_vote:tau=1000").estimate(None, comps).answer == "1"  # tau -> inf: the vote
    ref = parse_estimator("confidence_vote").estimate(None, ["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"])
    assert ref.answer == "2" and ref.flags == ["no_logprobs"]
    w, had = softmax_weights(comps, 0.5)
    assert had and abs(sum(w) - 1) < 1e-9


def test_tail_confidence_reads_only_the_last_tokens():
    """Sure at the end but not before (answer 2) against unsure at the end (answer 1): the whole-trace
    mean favours 1, the last two tokens favour 2."""
    def trace(answer, lps):
        return Completion(f"\\boxed{{{answer}}}", "stop", 5, len(lps), logprobs=[TokenLogprob("t", x) for x in lps])
    comps = [trace(1, [-0.1, -0.1, -0.1, -0.1, -1.0, -1.0]), trace(2, [-3.0, -3.0, -3.0, -3.0, -0.1, -0.1])]
    assert parse_estimator("confidence_vote:tau=0.1").estimate(None, comps).answer == "1"
    assert parse_estimator("confidence_vote:tau=0.1,tail=2").estimate(None, comps).answer == "2"
    with pytest.raises(InputError, match="tail must be >= 0"):
        parse_estimator("confidence_vote:tail=-1")


def yes_to(answer):
    """A scripted verifier: P(Yes) 0.9 for candidates holding `answer`, 0.2 for the rest."""
    def nll(prompt, cont):
        p = 0.9 if f"\\boxed{{{answer}}}" in prompt else 0.2
        return -math.log(p if cont == "Yes" else 1 - p)
    return ScriptedEngine(nll=nll)


def test_verified_vote_weighs_each_vote_by_the_anchors_yes_probability():
    anchor = yes_to(12)
    ref = parse_estimator("verified_vote").estimate(anchor, group(12, 12, 5, 5, 5))
    assert ref.answer == "12" and ref.flags == ["overrules_vote"]  # 2 x 0.9 > 3 x 0.2
    assert [c["candidate"] for c in ref.calls] == [0, 1, 2, 3, 4] and [c["p_yes"] for c in ref.calls] == [0.9, 0.9, 0.2, 0.2, 0.2]
    assert [c for _, c in anchor.scored] == ["Yes", "No"] * 5
    assert all(r.messages[-1]["content"].count("</candidate>") == 1 for r, _ in anchor.scored)  # one candidate per prompt: no order
    assert parse_estimator("verified_vote:alpha=0").estimate(yes_to(12), group(12, 12, 5, 5, 5)).answer == "5"  # alpha 0: the plain vote


def test_verified_vote_scope_reps_reads_one_candidate_per_answer_and_skips_unanimous_groups():
    anchor = yes_to(12)
    ref = parse_estimator("verified_vote:scope=reps").estimate(anchor, group(12, 12, 5, 5, 5))
    assert len(anchor.scored) == 4 and ref.answer == "12"  # one representative per class, Yes and No each: 2 x 0.9 > 3 x 0.2
    anchor = yes_to(12)
    ref = parse_estimator("verified_vote").estimate(anchor, group(5, 5))
    assert anchor.scored == [] and ref.answer == "5" and ref.flags == ["unanimous"]
    ref = parse_estimator("verified_vote").estimate(anchor, group(None, None))
    assert ref.answer is None and "no_candidate_answers" in ref.flags


def test_verified_vote_records_candidates_by_their_index_in_the_whole_group_after_screening():
    ref = parse_estimator("verified_vote").estimate(yes_to(12), ["", *group(12, 5)])  # the empty rollout is screened out
    assert [c["candidate"] for c in ref.calls] == [1, 2] and ref.order == [1] and "excluded:0:empty" in ref.flags


def test_a_reward_with_verified_vote_refuses_an_anchor_that_cannot_score():
    from catrl.errors import EngineError

    class NoScoring(ScriptedEngine):
        supports_scoring = False

    with pytest.raises(EngineError, match="cannot score"):
        CaTReward(NoScoring(), estimator="verified_vote")
    assert CaTReward(NoScoring(), estimator="cluster").estimator.name == "cluster"


def test_votes_with_no_answer_give_a_flagged_empty_reference():
    for name in ("majority", "confidence_vote"):
        ref = parse_estimator(name).estimate(None, group(None, None))
        assert ref.answer is None and "no_candidate_answers" in ref.flags


def test_vote_ties_go_to_the_answer_seen_first():
    assert vote(["2", "1", "1", "2"])[0] == 0


def test_medoid_picks_the_central_text():
    assert medoid(["the dose is 5 mg daily", "zebra", "the dose is 5 mg twice daily"]) == 0


@pytest.mark.parametrize("spec,msg", [
    ("nope", "unknown estimator"), ("permutation:k=0", "k must be >= 1"), ("recursive:m=1", "m must be >= 2"),
    ("permutation:x=1", "unknown parameter"), ("confidence_vote:tau=0", "tau must be > 0"), ("cluster:order=z", "order must be"),
    ("verified_vote:scope=some", "scope must be all or reps"), ("verified_vote:alpha=-1", "alpha must be >= 0"),
    ("synthesis:min_support=0", "min_support must be >= 1"), ("cluster:min_support=two", "min_support='two' is not a int"),
])
def test_bad_specs_fail_before_any_model_loads(spec, msg):
    with pytest.raises(InputError, match=msg):
        parse_estimator(spec)


def test_min_support_sends_the_same_prompts_and_only_replaces_an_uncorroborated_answer():
    comps = group(5, 5, 6, 7)  # the vote: 5 (2 rollouts); 6 and 7 stand alone
    for said, want, flag in (("6", "5", "uncorroborated_reference:1<2"), ("9", "5", "uncorroborated_reference:0<2"),
                             ("5", "5", None), ("5.0", "5.0", None)):
        plain, ruled = ScriptedEngine(reply=lambda text, said=said: f"so \\boxed{{{said}}}"), ScriptedEngine(reply=lambda text, said=said: f"so \\boxed{{{said}}}")
        ref0 = parse_estimator("synthesis").estimate(plain, comps)
        ref = parse_estimator("synthesis:min_support=2").estimate(ruled, comps)
        assert [r.messages for r in plain.requests] == [r.messages for r in ruled.requests]  # the same calls: a replay is free
        assert ref0.answer == said and ref.answer == want
        assert (flag in ref.flags) if flag else not any(f.startswith("uncorroborated") for f in ref.flags)
        if flag:  # the vote's rollout, with the anchor's call kept for the audit
            assert ref.text == comps[0] and ref.finish_reason == "vote" and ref.calls == ref0.calls and ref.prompt == ref0.prompt
    assert parse_estimator("synthesis:min_support=2").spec()["min_support"] == 2 and "min_support" not in parse_estimator("synthesis").spec()
    # nothing corroborated (every answer alone): the estimator's answer stands
    assert parse_estimator("synthesis:min_support=2").estimate(ScriptedEngine(reply=lambda text: "\\boxed{6}"), group(5, 6, 7)).answer == "6"
    # `both` keeps its rule, and the new one applies after it; a junk rollout screened out is no support
    ref = parse_estimator("cluster:order=both,min_support=2").estimate(ScriptedEngine(reply=lambda text: "\\boxed{6}"), group(5, 5, 6, 7))
    assert ref.answer == "5" and "uncorroborated_reference:1<2" in ref.flags
    junk = "\\boxed{6} " * 400
    ref = parse_estimator("synthesis:min_support=2").estimate(ScriptedEngine(reply=lambda text: "\\boxed{6}"), [*group(5, 5, 6), junk])
    assert ref.answer == "5" and "uncorroborated_reference:1<2" in ref.flags and 3 in ref.excluded


def test_min_support_is_checked_against_the_group_and_the_mode():
    # a group smaller than min_support can corroborate nothing: the rule leaves it alone (the default must work at G=1)
    assert parse_estimator("synthesis:min_support=2").estimate(ScriptedEngine(reply=lambda text: "\\boxed{6}"), group(5)).answer == "6"
    with pytest.raises(InputError, match="min_support needs final answers"):
        check_estimator("permutation:k=2,min_support=2", 8, "freeform")


def test_m_above_g_and_answerless_estimators_in_freeform_are_refused():
    with pytest.raises(InputError, match="more than the group's 4"):
        check_estimator("recursive:m=5", 4)
    for name in ("cluster", "confidence_vote", "majority", "verified_vote"):
        with pytest.raises(InputError, match="reasoning"):
            check_estimator(name, 8, "freeform")
    with pytest.raises(InputError, match="more than the group's 3"):
        parse_estimator("recursive:m=4").estimate(ScriptedEngine(), group(1, 2, 3))


def test_no_estimator_sees_the_question():
    for name in REGISTRY:
        anchor = ScriptedEngine()
        reward = CaTReward(anchor, estimator=name)
        rec = reward(QUESTION, group(12, 12, 5, None))
        assert all(QUESTION not in r.messages[-1]["content"] for r in anchor.requests + [r for r, _ in anchor.scored])
        assert rec.reference.estimator["name"] == name


def test_reward_records_carry_the_estimator_and_its_flags():
    rec = CaTReward(ScriptedEngine(), estimator="cluster")(None, group(4, 4))
    assert rec.rewards == [1.0, 1.0] and "unanimous" in rec.flags and rec.reference.estimator["name"] == "cluster"
    with pytest.raises(InputError, match="never sees the question"):
        CaTReward(ScriptedEngine(), estimator="cluster", include_question=True)
    with pytest.raises(InputError, match="reasoning"):
        RubricReward(ScriptedEngine(), ScriptedEngine(), estimator="cluster")


def test_train_config_names_a_bad_estimator():
    from catrl.train_config import TrainConfig

    with pytest.raises(InputError, match="field 'estimator'.*m=9 is more than"):
        TrainConfig(policy="smollm2-135m", estimator="recursive:m=9").validate()


def test_a_failed_anchor_call_takes_the_anchor_error_path():
    from catrl.errors import EngineError
    from catrl.rewards import AnchorFailures

    class Down(ScriptedEngine):
        def generate(self, *a, **k):
            raise EngineError("anchor down")

    reward = CaTReward(Down(), estimator="permutation:k=2")
    groups = [group(1, 2)]
    rec = AnchorFailures().score(lambda: reward.score_groups([None], groups), groups)[0]
    assert rec.rewards == [0.0, 0.0] and rec.flags[0] == "anchor_error"


@pytest.mark.real_model
@pytest.mark.parametrize("spec", ["synthesis:shuffle=1", "permutation:k=2", "cluster", "cluster:order=shuffled", "cluster:order=both",
                                  "recursive:m=2,t=1", "cluster:order=both,min_support=2"])
def test_every_anchor_estimator_on_a_real_model(smol_engine, spec):
    texts = ["3 boxes of 4 is 12.\n\\boxed{12}", "4 * 3 = 12\n\\boxed{12}", "I think 7.\n\\boxed{7}"]
    ref = parse_estimator(spec).estimate(smol_engine, texts, sampling=Sampling(max_tokens=32, seed=0))
    assert ref.estimator["name"] == spec.split(":")[0]
    assert ref.calls and all(c["prompt_tokens"] > 0 for c in ref.calls)
    assert ref.prompt and ref.prompt[-1]["content"].count("<candidate id=") >= 2
    assert ref.anchor_tokens[0] > 0


@pytest.mark.real_model
def test_verified_vote_on_a_real_model(smol_engine):
    texts = ["3 boxes of 4 is 12.\n\\boxed{12}", "4 * 3 = 12\n\\boxed{12}", "I think 7.\n\\boxed{7}"]
    ref = parse_estimator("verified_vote").estimate(smol_engine, texts)
    assert ref.answer in ("12", "7") and [c["candidate"] for c in ref.calls] == [0, 1, 2]
    assert all(0 < c["p_yes"] < 1 and c["prompt_tokens"] > 20 for c in ref.calls)


@pytest.mark.real_model
def test_freeform_permutation_on_a_real_model(smol_engine):
    texts = ["Rest and drink water.", "Drink water and rest; see a doctor if it gets worse.", "Take paracetamol and rest."]
    ref = parse_estimator("permutation:k=2").estimate(smol_engine, texts, "freeform", Sampling(max_tokens=32, seed=0))
    assert ref.answer is None and len(ref.calls) == 2 and ref.prompt
    assert ref.order in [c["order"] for c in ref.calls]  # the medoid's own prompt is the one kept


def test_audit_pages_name_the_estimator_and_the_order_read():
    from catrl.report.html import estimated_by

    ref = parse_estimator("cluster").estimate(ScriptedEngine(), group(3, 4, 4)).to_dict()
    shown = estimated_by(ref)
    assert shown.startswith("estimator cluster (seed=0, screen=True, order=support") and "order 1 2" in shown
    assert "&lt;" in estimated_by({**ref, "flags": ["<b>x</b>"]})


def test_default_estimator_is_corroborated_cluster_both_on_math_and_synthesis_free_form():
    """answer, label and the eval's `cat` row default to the best estimator measured (docs/reference_estimators);
    free-form, the training rewards and a spec of None keep the paper's synthesis."""
    from catrl.evaluate import EvalConfig
    from catrl.evaluate_freeform import FreeformConfig

    both = parse_estimator(default_estimator("reasoning"))
    assert both.name == "cluster" and both.order == "both" and both.min_support == 2
    assert EvalConfig().estimator == default_estimator("reasoning") and FreeformConfig().estimator == "synthesis"
    assert parse_estimator(None).name == "synthesis" and CaTReward(None).estimator.name == "synthesis"
    with pytest.raises(InputError, match="mode must be one of"):
        default_estimator("poetry")


def test_split_specs_keeps_each_estimators_own_parameters():
    assert split_specs("synthesis,recursive:m=2,t=1,cluster:order=both") == ["synthesis", "recursive:m=2,t=1", "cluster:order=both"]
    assert split_specs(" majority , ,permutation:k=2") == ["majority", "permutation:k=2"]
    assert [parse_estimator(s).spec()["name"] for s in split_specs("recursive:m=2,t=1,majority")] == ["recursive", "majority"]


def test_unnumbered_synthesis_leaves_the_ids_out_and_says_so():
    anchor = ScriptedEngine()
    texts = group(1, 2, 3)
    ref = parse_estimator("synthesis:numbered=0").estimate(anchor, texts)
    prompt = anchor.requests[0].messages[-1]["content"]
    assert "<candidate id=" not in prompt and prompt.count("<candidate>\n") == 3 and all(t in prompt for t in texts)
    assert ref.estimator == {"name": "synthesis", "seed": 0, "screen": True, "shuffle": False, "numbered": False}
    assert "numbered" not in parse_estimator("synthesis").spec()


@pytest.mark.real_model
def test_unnumbered_synthesis_on_a_real_model(smol_engine):
    texts = ["3 + 4 = 7, so \\boxed{7}", "3 + 4 = 8. \\boxed{8}", "Adding gives \\boxed{7}"]
    ref = parse_estimator("synthesis:numbered=0").estimate(smol_engine, texts, "reasoning", Sampling(max_tokens=32, seed=0))
    prompt = ref.prompt[-1]["content"]
    assert "<candidate id=" not in prompt and prompt.count("<candidate>\n") == 3 and ref.calls[0]["completion_tokens"] > 0
