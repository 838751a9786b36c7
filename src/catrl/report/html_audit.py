"""One self-contained HTML page for a CaT-RL run's audit trail: totals per stretch of the run, then
every scored group (step, prompt, reference, the exact anchor prompt, each rollout with its answer
and reward, the rubric and verdicts on free-form tasks). Model text is escaped: data here too."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from catrl.report.html import STYLE, estimated_by, mark
from catrl.report.table import AUDIT_HEADER, audit_rows
from catrl.run_audit import GradedGroup, Stretch


def _messages(msgs: Any) -> str:
    if isinstance(msgs, str):
        return msgs
    return "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in msgs or [])


def _group(row: dict[str, Any], g: GradedGroup) -> str:
    ref = row.get("reference") or {}
    answers = row.get("answers") or [None] * len(row["rollouts"])
    rolls = "".join(
        f"<details><summary>rollout {i + 1}: answer <b>{escape(str(a))}</b> · reward <b>{r:g}</b>"
        f"{' ' + mark(g.rollouts_right[i]) if g.rollouts_right is not None else ''}"
        f"{' · ' + escape(', '.join(fl)) if fl else ''}</summary><pre>{escape(str(text))}</pre></details>"
        for i, (text, a, r, fl) in enumerate(zip(row["rollouts"], answers, g.rewards,
                                                  row.get("rollout_flags") or [[]] * len(g.rewards)))
    )
    rubric = ""
    if row.get("rubric"):
        crit = "".join(f"<li>{escape(c['text'])}</li>" for c in row["rubric"].get("criteria", []))
        rubric = f"<details><summary>rubric ({len(row['rubric'].get('criteria', []))} criteria)</summary><ol>{crit}</ol></details>"
        if row.get("verdicts"):
            table = "".join(
                f"<tr><td>{i + 1}</td>" + "".join(f"<td>{'yes' if v.get('met') else 'no' if v.get('met') is False else '?'}</td>" for v in vs) + "</tr>"
                for i, vs in enumerate(row["verdicts"])
            )
            rubric += f"<details><summary>verdicts (rollout x criterion)</summary><table>{table}</table></details>"
    gold = f" · gold <b>{escape(str(row['gold']))}</b> (monitoring only)" if row.get("gold") is not None else ""
    majority = f" · majority <b>{escape(str(g.majority_answer))}</b> {mark(g.majority_right)}" if g.majority_answer is not None else ""
    flags = f" · flags: {escape(', '.join(g.flags))}" if g.flags else ""
    return (
        f'<div class="q"><h3>step {escape(str(row.get("step")))} · {escape(str(row.get("id") or ""))}</h3>'
        f"<pre>{escape(_messages(row.get('prompt')))}</pre>"
        f"<p>reference answer <b>{escape(str(ref.get('answer')))}</b> {mark(g.reference_right)}{majority}{gold}{flags} · {estimated_by(ref, flags=False)}</p>"  # the group flags hold the reference's
        f"<details><summary>synthesized reference</summary><pre>{escape(str(ref.get('text', '')))}</pre></details>"
        f"<details><summary>exact anchor prompt</summary><pre>{escape(_messages(ref.get('prompt')))}</pre></details>"
        f"{rubric}{rolls}</div>"
    )


def write_audit_html(rows: list[dict[str, Any]], graded: list[GradedGroup], parts: list[Stretch], path: Path, title: str) -> Path:
    head = "".join(f"<th>{escape(h)}</th>" for h in AUDIT_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in audit_rows(parts))
    groups = "".join(_group(r, g) for r, g in zip(rows, graded, strict=True))
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><p>Graded against gold after the run, where the data has it; gold never reached a reward."
        f" A rewarded rollout is one whose reward is above 0.</p><table><tr>{head}</tr>{body}</table>"
        f"<h2>Groups ({len(rows)})</h2>{groups}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
