"""The baselines on fixed rollouts (orchestration with a scripted policy)."""

from catrl.selection import majority, min_perplexity, mutual_predictability, parse_choice, self_select, single, universal_self_consistency
from catrl.types import ChatRequest, Completion, TokenLogprob
from fakes import ScriptedEngine

ROLLS = ["\\boxed{5}", "\\boxed{7}", "\\boxed{7.0}", "\\boxed{5}", "nothing"]


def test_single_and_majority():
    assert single(ROLLS).answer == "5"
    m = majority(ROLLS)
    assert m.index == 0 and m.answer == "5"  # 5 and 7 tie at two votes: the answer seen first wins
    m = majority(ROLLS + ["\\boxed{7}"])
    assert m.answer == "7" and m.detail["votes"] == 3
    assert majority(["none", "nope"]).index is None


def test_parse_choice():
    assert parse_choice("I pick <choice>3</choice>", 5) == 2
    assert parse_choice("<choice>9</choice> hmm, actually candidate 2", 5) == 1
    assert parse_choice("none of them", 5) is None


def test_self_select_and_usc_see_the_question():
    eng = ScriptedEngine(lambda text: "<choice>2</choice>")
    sel = self_select(eng, ["What is 3+4?"], [ROLLS])[0]
    assert sel.index == 1 and sel.answer == "7"
    assert "What is 3+4?" in eng.requests[0].messages[-1]["content"]
    usc = universal_self_consistency(eng, ["What is 3+4?"], [ROLLS])[0]
    assert usc.index == 1 and "consistent" in eng.requests[1].messages[-1]["content"]
    bad = self_select(ScriptedEngine(lambda t: "dunno"), ["q"], [ROLLS])[0]
    assert bad.index == 0 and bad.flags == ["unparsed_choice"]


def test_min_perplexity_uses_own_logprobs_or_scores():
    comps = [Completion(r, "stop", 3, 1, [TokenLogprob("x", -v)]) for r, v in zip(ROLLS, [2.0, 0.5, 1.0, 3.0, 4.0])]
    req = ChatRequest.user("q")
    assert min_perplexity(ScriptedEngine(), [req], [comps])[0].index == 1
    eng = ScriptedEngine(nll=lambda prompt, cont: 0.2 if cont == "nothing" else 1.0)
    no_lp = [Completion(r, "stop", 3, 1) for r in ROLLS]
    assert min_perplexity(eng, [req], [no_lp])[0].index == 4 and len(eng.scored) == 5


def test_mutual_predictability_scores_each_rollout_after_the_others():
    eng = ScriptedEngine(nll=lambda prompt, cont: 0.1 if cont == ROLLS[2] else 1.0)
    sel = mutual_predictability(eng, ["q"], [ROLLS])[0]
    assert sel.index == 2
    assert sorted(c for _, c in eng.scored) == sorted(ROLLS)
    ((req, cont),) = [(r, c) for r, c in eng.scored if c == ROLLS[1]]
    prompt = req.messages[-1]["content"]
    assert ROLLS[1] not in prompt and prompt.count("<candidate ") == len(ROLLS) - 1


def test_majority_of_extracted_answers_skips_missing_and_breaks_ties_by_first_seen():
    from catrl.selection import majority_of_answers

    assert majority_of_answers([None, "0.5", "1/2", "3", "3"]).answer == "0.5"  # 0.5 and 1/2 are one class, seen first
    assert majority_of_answers([None, None]).index is None
    assert majority(["\\boxed{2}", "x", "\\boxed{2}"]).answer == majority_of_answers(["2", None, "2"]).answer == "2"
