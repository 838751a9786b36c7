"""Reading back a CaT-RL audit trail: grading against gold afterwards, stretches of the run, the page, `catrl audit`."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from catrl.cli import app
from catrl.errors import InputError
from catrl.report.html_audit import write_audit_html
from catrl.report.table import audit_rows, positions_line
from catrl.run_audit import grade_group, lone_positions, read_audit, stretches


def row(step, answers, rewards, ref, gold="42", **extra):
    texts = [f"... \\boxed{{{a}}}" if a is not None else "no answer" for a in answers]
    return {"step": step, "id": f"q{step}", "prompt": [{"role": "user", "content": "What is 6*7? <b>"}], "rollouts": texts,
            "gold": gold, "rewards": rewards, "answers": answers, "flags": [] if ref else ["no_reference_answer"],
            "reference": {"text": f"\\boxed{{{ref}}}", "answer": ref, "prompt": [{"role": "user", "content": "<candidate>..."}]}, **extra}


ROWS = [
    row(1, ["41", "41", "42", None], [1, 1, 0, 0], "41"),  # the reference follows a wrong majority
    row(2, ["42", "42", "7", "42.0"], [1, 1, 0, 1], "42"),
    row(3, ["1", "2", "3", "4"], [0, 0, 0, 0], None),
    row(4, ["42", "42", "42", "42"], [1, 1, 1, 1], "42", gold=None),  # no gold: not graded
]


def write(tmp_path, rows):
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_grading_and_stretches():
    graded = [grade_group(r) for r in ROWS]
    assert [g.reference_right for g in graded] == [False, True, False, None]
    assert [g.majority_answer for g in graded] == ["41", "42", "1", "42"] and graded[1].rollouts_right == [True, True, False, True]
    parts = stretches(graded, parts=2)
    assert [(p.first_step, p.last_step, p.groups) for p in parts] == [(1, 2, 2), (3, 4, 2), (1, 4, 4)]
    whole = parts[-1]
    assert (whole.graded, whole.reference_right, whole.majority_right, whole.any_right) == (3, 1, 1, 2)
    assert (whole.reference_beat_majority, whole.reference_lost_to_majority) == (0, 0)
    won = stretches([grade_group(row(5, ["7", "7", "42", "8"], [0, 0, 1, 0], "42")),  # the reference overrules a wrong majority
                     grade_group(row(6, ["42", "42", "7", "8"], [0, 0, 1, 0], "7"))], parts=1)[-1]  # and follows a wrong rollout
    assert (won.reference_beat_majority, won.reference_lost_to_majority) == (1, 1)
    assert (whole.rollouts, whole.rollouts_right, whole.rewarded, whole.rewarded_right) == (12, 4, 5, 3)
    assert whole.zero_variance_groups == 2 and whole.flags == {"no_reference_answer": 1}
    # the reward's own accuracy: paid-and-right or unpaid-and-wrong, over the graded rollouts (1 + 4 + 4 of 12)
    assert whole.reward_agrees == 9
    # diversity: classes of equivalent answers per group (42 and 42.0 are one), over all four groups
    assert [g.distinct_answers for g in graded] == [2, 2, 4, 1] and whole.distinct_answers_mean == pytest.approx(9 / 4)
    assert whole.reward_mean == pytest.approx(9 / 16)
    assert [p.label for p in parts] == ["steps 1-2", "steps 3-4", "whole run"]
    # a control reward has no reference: its groups count for the rollouts and the vote, not for "ref right"
    control = grade_group({**row(7, ["42", "7", "42", "8"], [1, 0, 0, 1], None), "flags": ["control:random"]})
    assert control.reference_right is None and control.majority_right is True and control.rollouts_right == [True, False, True, False]
    mixed = stretches([graded[1], control], parts=1)[-1]
    assert (mixed.graded, mixed.referenced, mixed.reference_right, mixed.majority_right) == (2, 1, 1, 2)
    assert audit_rows(stretches([control], parts=1))[-1][4:7] == ["-", "1/1 100%", "-"]
    assert len(stretches(graded, parts=8)) == 1  # fewer steps than parts: the whole run only
    stepless = [grade_group({**r, "step": None}) for r in ROWS]  # veRL and `catrl serve` trails: cut by row order
    assert [(p.label, p.groups) for p in stretches(stepless, parts=2)] == [("rows 1-2", 2), ("rows 3-4", 2), ("whole run", 4)]


FREEFORM = {"step": 5, "prompt": [{"role": "user", "content": "My ankle hurts."}], "rollouts": ["Rest it.", "Run on it."],
            "rewards": [1.0, 0.5], "answers": [], "flags": [], "reference": {"text": "Rest, ice.", "answer": None, "prompt": []},
            "rubric": {"criteria": [{"text": "Advises <rest>"}, {"text": "Mentions ice"}], "source": "reference"},
            "verdicts": [[{"met": True}, {"met": True}], [{"met": False}, {"met": True}]]}


def test_page_escapes_model_text_and_shows_rubrics(tmp_path):
    rows = ROWS + [FREEFORM]
    graded = [grade_group(r) for r in rows]
    assert graded[-1].reference_right is None and graded[-1].rollouts_right is None  # free-form: nothing to grade
    page = write_audit_html(rows, graded, stretches(graded, 2), tmp_path / "a.html", "run")
    html = page.read_text()
    assert "What is 6*7? &lt;b&gt;" in html and "<b>" in html and "&lt;candidate&gt;" in html
    assert html.count('class="q"') == 5 and "gold <b>42</b>" in html
    assert "rubric (2 criteria)" in html and "Advises &lt;rest&gt;" in html and "<td>2</td><td>no</td><td>yes</td>" in html


def test_bad_rows_name_file_and_line(tmp_path):
    path = write(tmp_path, ROWS[:1])
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(InputError, match=r"audit.jsonl:2: not valid JSON"):
        read_audit(tmp_path)
    path.write_text(json.dumps({"step": 1, "rewards": [1]}) + "\n")
    with pytest.raises(InputError, match=r"audit.jsonl:1: field 'rollouts'"):
        read_audit(path)
    gz = tmp_path / "audit.jsonl.gz"
    gz.write_bytes(gzip.compress(json.dumps(ROWS[0]).encode() + b"\n"))
    assert read_audit(gz)[0]["step"] == 1  # the committed, gzipped trail reads the same
    with pytest.raises(InputError, match="no audit trail"):
        read_audit(tmp_path / "nowhere")


def test_lone_positions_count_where_a_lone_rollout_sets_the_reference():
    rows = [row(1, ["1", "2", "3", "4"], [0, 0, 0, 1], "4", matches=[False, False, False, True]),  # the last one alone
            row(2, ["1", "2", "3", "4"], [0, 0, 0, 1], "4", matches=[False, False, False, True]),
            row(3, ["1", "2", "3", "9"], [1, 0, 0, 0], "1", matches=[True, False, False, False]),
            row(4, ["7", "7", "3", "4"], [1, 1, 0, 0], "7", matches=[True, True, False, False]),  # two hold it: not lone
            row(5, ["1", "2", "3", "4"], [0, 0, 0, 0], "5", matches=[False] * 4),  # the anchor's own answer
            FREEFORM, {**FREEFORM, "matches": [True, False]}]  # rubric rows have no answers to match
    assert lone_positions(rows) == [1, 0, 0, 2]
    assert positions_line([1, 0, 0, 2]) == ("reference answer held by one rollout only: 3 groups; by the rollout's position "
                                             "in the anchor prompt (1-4): 1 0 0 2 (chance: 0.8 each)")
    assert lone_positions(ROWS) == [] and positions_line([]) is None and positions_line([0, 0]) is None


def test_cli_prints_the_table_and_writes_the_page(tmp_path):
    write(tmp_path, ROWS)
    res = CliRunner().invoke(app, ["audit", str(tmp_path), "--parts", "2"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    whole = next(line for line in res.output.splitlines() if "whole run" in line)
    assert "4/12 33%" in whole and "3/5 60%" in whole and " 0/0 " in whole  # rollouts right; rewarded right; ref won/lost
    assert (tmp_path / "audit.html").is_file() and "held by one rollout only" not in res.output  # no `matches` in ROWS
    write(tmp_path, ROWS + [row(5, ["1", "2", "3", "4"], [0, 0, 0, 1], "4", matches=[False, False, False, True])])
    res = CliRunner().invoke(app, ["audit", str(tmp_path)], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "held by one rollout only: 1 groups" in res.output and "0 0 0 1 (chance: 0.2 each)" in res.output
    bad = CliRunner().invoke(app, ["audit", str(tmp_path / "missing")], env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "no audit trail" in bad.output
