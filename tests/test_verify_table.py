"""Equivalence on the answers MATH and GSM8K actually have: a table of tricky pairs, both ways, and
every MATH-500 gold answer against the boxed answer of its own solution."""

import json
from importlib import resources

import pytest

from catrl.verify import equivalent, last_boxed

PAIRS = [
 # fractions
 (r"\frac{1}{2}", r"\dfrac{1}{2}", True), (r"\frac{1}{2}", "1/2", True), (r"\frac{1}{2}", "0.5", True),
 (r"\frac{3}{4}", r"\tfrac34", True), (r"\frac{2}{4}", r"\frac{1}{2}", True), (r"\frac{1}{3}", "0.33", False),
 (r"-\frac{1}{2}", r"\frac{-1}{2}", True), (r"\frac{1}{2}", r"\frac{1}{3}", False),
 # decimals and numbers
 ("0.5", ".5", True), ("1000", "1,000", True), ("1000", "1{,}000", True), ("3.14", "3.140", True), ("3.14", r"\pi", False),
 ("12", "12.5", False), ("-7", "−7", True),
 # percentages
 (r"50\%", "50", True), (r"50\%", "50%", True), ("25", r"25\%", True),
 # units and text
 (r"5\text{ cm}", "5", True), (r"18 \text{ dollars}", "18", True), (r"\$18.00", "18", True), (r"10\text{ inches}", "12", False),
 (r"\text{(C)}", "C", True), (r"\text{Evelyn}", "Evelyn", True), (r"\text{Monday}", r"\text{Tuesday}", False),
 # degrees
 (r"30^\circ", "30", True), (r"30^{\circ}", r"30^\circ", True), (r"90^\circ", "45", False),
 # roots, pi, expressions
 (r"2\sqrt{2}", r"\sqrt{8}", True), (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True), (r"2\pi", r"\pi \cdot 2", True),
 (r"x^2+2x+1", r"(x+1)^2", True), (r"x^2+1", r"(x+1)^2", False),
 # intervals
 (r"(-\infty, 3)", r"(-\infty,3)", True), (r"[2, 5)", r"[2,5)", True), (r"[2,5]", r"(2,5)", False), (r"(0,\infty)", r"(0, \infty)", True),
 # sets and multiple answers
 (r"\{1, 2, 3\}", r"\{3,2,1\}", True), ("1, 2", "2, 1", True), ("1, 2", "1, 3", False), (r"x=3", "3", True),
 # tuples / points
 (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True), (r"(1,2)", r"(2,1)", False),
 # matrices
 (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
 (r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}", r"\begin{pmatrix} 1 & 0 \\ 0 & 2 \end{pmatrix}", False),
 # plain text / bases
 ("10101_2", "10101_2", True), ("yes", "no", False),
]


@pytest.mark.parametrize("reference,candidate,expected", PAIRS)
def test_tricky_pairs(reference, candidate, expected):
    check = equivalent(reference, candidate)
    assert check.equal is expected and check.flag is None


def test_table_is_big_and_balanced():
    assert len(PAIRS) >= 40
    assert sum(e for *_, e in PAIRS) >= 20 and sum(not e for *_, e in PAIRS) >= 12


def test_every_math500_gold_matches_its_own_solution():
    rows = [json.loads(line) for line in resources.files("catrl").joinpath("data/math500.jsonl").read_text().splitlines()]
    assert len(rows) == 500
    failures = []
    for row in rows:
        boxed = last_boxed(row["solution"])
        check = equivalent(row["answer"], boxed) if boxed is not None else None
        if check is None or not check.equal:
            failures.append((row["unique_id"], row["answer"], boxed, check))
    assert failures == []
