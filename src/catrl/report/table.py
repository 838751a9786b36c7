"""The terminal summary of an evaluation (rich tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from catrl.run_audit import Stretch


def format_accuracy(v: dict[str, Any], ci: str = "") -> str:
    """An accuracy with its n and CI; "- (n=0)" over no questions, where mean and CI are nan."""
    if not v["n"]:
        return "- (n=0)"
    return f"{v['mean']:.3f} (n={v['n']}, {ci}[{v['lo']:.3f}, {v['hi']:.3f}])"


def format_figure(v: Any, ci: str = "") -> str:
    """One analysis figure as text: an accuracy (see format_accuracy), a share, or a row of them."""
    if isinstance(v, dict) and "mean" in v:
        return format_accuracy(v, ci)
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return " ".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def method_table(summary: dict[str, Any]) -> Table:
    t = Table(title=f"accuracy on {summary['questions']} questions (95% Wilson CI)")
    for col in ("method", "n", "accuracy", "95% CI"):
        t.add_column(col)
    for m, a in summary["methods"].items():
        t.add_row(m, str(a["n"]), f"{a['mean']:.3f}", f"[{a['lo']:.3f}, {a['hi']:.3f}]")
    return t


def paired_table(summary: dict[str, Any]) -> Table:
    t = Table(title="paired differences (bootstrap 95% CI; McNemar exact p)")
    for col in ("pair", "n", "diff", "95% CI", "only CaT right", "only other right", "p"):
        t.add_column(col)
    for k, d in summary["paired"].items():
        t.add_row(k, str(d["n"]), f"{d['diff']:+.3f}", f"[{d['lo']:+.3f}, {d['hi']:+.3f}]", str(d["a_only"]), str(d["b_only"]), f"{d['mcnemar_p']:.3g}")
    return t


ANALYSIS_LABELS = {
    "disagree_with_majority_share": "share of questions where CaT's answer differs from the majority's",
    "disagree_count": "questions where CaT's answer differs from the majority's",
    "cat_accuracy_when_disagreeing": "CaT's accuracy where it differs from the majority",
    "majority_accuracy_when_disagreeing": "the majority's accuracy where CaT differs from it",
    "cat_right_all_rollouts_wrong_share": "share of questions CaT gets right while every rollout is wrong",
    "cat_right_all_rollouts_wrong_count": "questions CaT gets right while every rollout is wrong",
    "all_rollouts_wrong_count": "questions where every rollout is wrong",
    "any_rollout_right_share": "share of questions some rollout gets right (the ceiling for picking one)",
    "cat_no_answer_count": "CaT references with no final answer",
    "cat_answer_minority_count": "CaT's answer held by a minority of rollouts, not the vote's",
    "cat_accuracy_answer_minority": "CaT's accuracy where its answer is a minority's",
    "cat_answer_none_count": "CaT's answer held by no rollout",
    "cat_accuracy_answer_none": "CaT's accuracy where no rollout holds its answer",
    "cat_answer_held_by_candidate_share": "share of references whose answer the candidate holds, by its position in the anchor prompt (1..G)",
    "cat_lone_answer_candidate_count": "references whose answer one candidate alone holds, by its position in the anchor prompt (1..G)",
}
"""Plain words for the analyses (evaluate.summarize), for the terminal table and report.html alike;
summary.json keeps the keys."""


def analysis_label(key: str) -> str:
    """What an analyses key measures, in plain words (the key itself for one without a label)."""
    return ANALYSIS_LABELS.get(key, key)


def analyses_table(summary: dict[str, Any]) -> Table:
    t = Table(title="the paper's analyses")
    t.add_column("figure")
    t.add_column("value")
    for k, v in (summary.get("analyses") or {}).items():
        t.add_row(analysis_label(k), format_figure(v))
    for k, row in (summary.get("sweep") or {}).items():
        t.add_row(f"G={k}: CaT / majority", f"{row['cat']['mean']:.3f} / {row['majority']['mean']:.3f} (n={row['cat']['n']})")
    return t


# -- a CaT-RL run's audit trail (catrl audit, bench/cat_rl.py, the audit page) --------------------
AUDIT_HEADER = ["stretch", "groups", "reward", "zero-var groups", "ref right", "majority right", "ref won/lost", "rollouts right",
                "rewarded right", "reward right", "answers/group"]
"""`ref won/lost`: groups where the reference was right and the majority wrong / the reverse. `reward right`: rollouts
whose reward agrees with their correctness (paid and right, or unpaid and wrong). `answers/group`: distinct final answers."""


def _share(k: int, n: int) -> str:
    return f"{k}/{n} {k / n:.0%}" if n else "-"


def audit_rows(parts: list[Stretch]) -> list[list[str]]:
    """Table rows shared by the page and the terminal: one per stretch, the whole run last."""
    rows = []
    for s in parts:
        rows.append([
            s.label, str(s.groups), f"{s.reward_mean:.3f}", _share(s.zero_variance_groups, s.groups),
            _share(s.reference_right, s.referenced), _share(s.majority_right, s.graded),
            f"{s.reference_beat_majority}/{s.reference_lost_to_majority}" if s.referenced else "-",
            _share(s.rollouts_right, s.rollouts), _share(s.rewarded_right, s.rewarded), _share(s.reward_agrees, s.rollouts),
            f"{s.distinct_answers_mean:.1f}",
        ])
    return rows


def positions_line(counts: list[int]) -> str | None:
    """One line on the anchor's position bias (run_audit.lone_positions), or None with no such group."""
    n = sum(counts)
    if not n:
        return None
    return (f"reference answer held by one rollout only: {n} groups; by the rollout's position in the anchor prompt "
            f"(1-{len(counts)}): {' '.join(map(str, counts))} (chance: {n / len(counts):.1f} each)")


def audit_table(parts: list[Stretch], title: str) -> Table:
    t = Table(*AUDIT_HEADER, title=title)
    for r in audit_rows(parts):
        t.add_row(*r)
    return t


GATE_HEADER = ["reward", "precision", "recall", "accuracy", "label acc", "rewarded", "right", "signal groups", "signal right"]
"""The reward-accuracy gate (catrl.reward_gate): `signal right` is, of the groups whose rewards vary, those whose rewarded
rollouts are right more often than the others (GRPO's advantage points the right way)."""


def gate_rows(rows: list[Any]) -> list[list[str]]:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return [[r.name, fmt(r.precision), fmt(r.recall), fmt(r.accuracy), fmt(r.label_accuracy), f"{r.rewarded}/{r.rollouts}",
             f"{r.right}/{r.rollouts}", f"{r.signal_groups}/{r.groups}", f"{r.signal_right}/{r.signal_groups}"] for r in rows]


def gate_table(rows: list[Any], title: str) -> Table:
    t = Table(*GATE_HEADER, title=title)
    for r in gate_rows(rows):
        t.add_row(*r)
    return t
