"""The evaluation report a person reads: the accuracy-vs-G plot and the analyses in plain words."""

from __future__ import annotations

import json

from rich.console import Console

from catrl.evaluate import QuestionResult, summarize, write_results
from catrl.report.html import write_html
from catrl.report.plots import SWEEP_METHODS, draw_sweep, plot_sweep
from catrl.report.table import ANALYSIS_LABELS, analyses_table, analysis_label


def _tied_sweep() -> dict:
    """CaT equal to the vote at every G, as on the README's first command (4 questions, G=4)."""
    acc = {"mean": 0.5, "lo": 0.15, "hi": 0.85, "n": 4}
    return {"sweep": {str(k): {"cat": dict(acc), "majority": dict(acc)} for k in (1, 2, 4)}, "methods": {}}


def test_the_sweep_plot_dodges_methods_so_a_line_equal_to_another_stays_visible(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    draw_sweep(ax, _tied_sweep())
    lines = [c.lines[0] for c in ax.containers]  # each errorbar's data line
    plt.close(fig)
    assert len(lines) == len(SWEEP_METHODS) == 2
    (cat_x, maj_x), (cat_y, maj_y) = ([list(ln.get_xdata()) for ln in lines], [list(ln.get_ydata()) for ln in lines])
    assert cat_y == maj_y  # the same values ...
    assert all(a != b for a, b in zip(cat_x, maj_x, strict=True))  # ... drawn side by side at every G
    assert all(a < k < b for a, k, b in zip(cat_x, (1, 2, 4), maj_x, strict=True))  # around their G, not elsewhere
    assert lines[0].get_marker() != lines[1].get_marker()
    assert plot_sweep(_tied_sweep(), tmp_path / "g.png").stat().st_size > 0


def _result(i: int, answers: list[str], ref: str | None) -> QuestionResult:
    return QuestionResult(id=f"q{i}", question="", gold="1", rollouts=[{"answer": a, "correct": a == "1"} for a in answers],
                          majority={"answer": "1"}, reference=None, methods={"cat": {"answer": ref, "correct": ref == "1"},
                                                                            "majority": {"answer": "1", "correct": True}})


def _summary() -> tuple[list[QuestionResult], dict]:
    results = [_result(0, ["1", "1", "1", "2"], "2"), _result(1, ["1", "1", "3", "4"], "9"), _result(2, ["1", "1", "1", "1"], "1"),
               _result(3, ["1", "1", "1", "5"], None)]
    return results, summarize(results, match="string")


def test_every_analysis_the_summary_holds_has_a_plain_label():
    _, s = _summary()
    assert s["analyses"] and set(s["analyses"]) <= set(ANALYSIS_LABELS)
    assert analysis_label("cat_answer_none_count") == "CaT's answer held by no rollout"
    assert analysis_label("not_a_known_key") == "not_a_known_key"


def test_the_table_and_the_page_name_analyses_in_plain_words_while_summary_json_keeps_the_keys(tmp_path):
    results, s = _summary()
    console = Console(width=300, record=True)
    console.print(analyses_table(s))
    text = console.export_text()
    page = write_html([], s, tmp_path / "r.html", "t").read_text()
    for key in ("cat_answer_none_count", "cat_no_answer_count", "cat_lone_answer_candidate_count"):
        assert ANALYSIS_LABELS[key] in text and key not in text
        assert f"{ANALYSIS_LABELS[key]}</td>".replace("'", "&#x27;") in page
    write_results(results, s, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())["analyses"]
    assert saved["cat_answer_none_count"] == 1 and saved["cat_no_answer_count"] == 1 and "cat_lone_answer_candidate_count" in saved
