import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from catrl.verify import Check, _Worker, as_number, equivalent, extract_answer, is_right, last_boxed


def test_last_boxed_balances_braces_and_takes_the_last():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{ {a} + \{b\} }") == r"{a} + \{b\}"
    assert last_boxed(r"\boxed{unclosed") is None
    assert last_boxed(r"\fbox{7}") == "7"


def test_fallbacks():
    assert extract_answer("so 3 + 4 = 7\n#### 7") == "7"
    assert extract_answer("The answer is $12$.") == "12"
    assert extract_answer("Final answer: 1,200.") == "1,200"
    assert extract_answer("no commitment here") is None
    assert extract_answer(r"#### 3 but then \boxed{4}") == "4"


def test_fallback_strips_math_delimiters_and_refuses_a_cut_off_box():
    assert extract_answer(r"The answer is \(12\).") == "12"
    assert extract_answer(r"The final answer is \[ \frac{1}{2} \]") == r"\frac{1}{2}"
    # a response truncated mid-answer commits to nothing (it used to yield the fragment "\(\boxed{")
    assert extract_answer(r"So the answer is \(\boxed{") is None
    assert extract_answer(r"The answer is \(\boxed{12") is None


@given(st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=40))
def test_boxed_roundtrip(s):
    assert last_boxed(f"xx \\boxed{{{s}}} yy") == s.strip()


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_extraction_never_crashes(s):
    out = extract_answer(s)
    assert out is None or isinstance(out, str)


def test_numbers_compare_without_sympy():
    assert as_number("1,234") == 1234 and as_number("$5.50") == as_number("5.5")
    assert equivalent("18", "18.0").equal and equivalent("1,000", "1000").equal
    assert not equivalent("18", "19").equal


def test_symbolic_equivalence_with_reference_as_gold():
    assert equivalent(r"\frac{1}{2}", "0.5").equal
    assert equivalent(r"2\sqrt{2}", r"\sqrt{8}").equal
    assert not equivalent(r"\frac{1}{3}", "0.5").equal


def test_string_mode_is_the_papers_plain_match():
    assert equivalent(r"\frac{1}{2}", r"\dfrac{1}{2}", mode="string").equal
    assert not equivalent(r"\frac{1}{2}", "0.5", mode="string").equal


def test_is_right_grades_against_gold_and_a_missing_side_is_wrong():
    assert is_right("0.5", r"\frac{1}{2}") and is_right(18, "18.0")  # gold may come as a number from JSON
    assert not is_right("18", "19") and not is_right("18", None) and not is_right(None, "18")
    assert is_right(r"\frac{1}{2}", r"\dfrac{1}{2}", mode="string") and not is_right("0.5", r"\frac{1}{2}", mode="string")


def slow_check(reference, candidate):
    if candidate == "hang":
        time.sleep(60)
    return reference == candidate


def test_timeout_is_a_defined_outcome_from_a_worker_thread():
    worker = _Worker("test_verify:slow_check")
    out = {}

    def run():
        t0 = time.monotonic()
        out["check"] = worker.check("a", "hang", timeout_s=0.5)
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    t.join(90)
    assert not t.is_alive()
    assert out["check"] == Check(False, "timeout") and out["seconds"] < 5
    assert worker.check("a", "a", timeout_s=5) == Check(True)  # a fresh worker replaces the killed one
    worker.close()


def test_symbolic_check_from_a_thread():
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("c", equivalent(r"\frac{2}{4}", r"\frac{1}{2}")))
    t.start()
    t.join(90)
    assert out["c"].equal


def test_model_text_is_never_evaluated():
    assert not equivalent("1", "__import__('os').system('touch /tmp/catrl_pwned')").equal
    import os

    assert not os.path.exists("/tmp/catrl_pwned")
