"""The audit page of a free-form (HealthBench) evaluation: the summary, then every conversation
with its rollouts, the CaT response and its exact anchor prompt, each response's physician-rubric
verdicts and score, what each method picked, and (with the validity analysis) each candidate
reward and the self-proposed rubrics. All model text is HTML-escaped."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from catrl.report.html import STYLE


def _score(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _verdicts(vs: list[dict[str, Any]], criteria: list[dict[str, Any]] | None) -> str:
    rows = []
    for k, v in enumerate(vs):
        crit = criteria[k] if criteria and k < len(criteria) else {}
        met = {True: '<span class="ok">met</span>', False: '<span class="bad">not met</span>'}.get(v["met"], "unjudged")
        rows.append(f"<tr><td>{escape(str(crit.get('points', '')))}</td><td>{escape(crit.get('text', ''))}</td><td>{met}</td>"
                    f"<td>{escape(v.get('reason') or '')}</td></tr>")
    return "<table><tr><th>points</th><th>criterion</th><th>verdict</th><th>reason</th></tr>" + "".join(rows) + "</table>"


def _conversation(r: dict[str, Any], criteria: list[dict[str, Any]] | None) -> str:
    turns = "".join(f"<pre><b>{escape(m['role'])}</b>\n{escape(m['content'])}</pre>" for m in r["messages"])
    picks = "".join(
        f"<tr><td>{escape(m)}</td><td>{escape(str(p['index'] + 1 if p['index'] is not None else 'synthesized'))}</td>"
        f"<td>{_score(p['score'])}</td><td>{escape(', '.join(p.get('flags') or []))}</td></tr>"
        for m, p in r["methods"].items()
    )
    rolls = ""
    for i, x in enumerate(r["rollouts"], 1):
        rewards = ", ".join(f"{escape(k)} {v:.2f}" for k, v in (x.get("rewards") or {}).items())
        rolls += (f"<details><summary>rollout {i}: physician score <b>{_score(x['score'])}</b>"
                  f"{' · ' + rewards if rewards else ''} ({x['tokens']} tokens, {escape(x['finish_reason'])})</summary>"
                  f"<pre>{escape(x['text'])}</pre>{_verdicts(x['verdicts'], criteria)}</details>")
    ref = r.get("reference")
    ref_html = ""
    if ref:
        prompt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in ref["prompt"])
        ref_html = (f"<details><summary>CaT response: physician score <b>{_score(ref['score'])}</b></summary>"
                    f"<pre>{escape(ref['text'])}</pre>{_verdicts(ref['verdicts'], criteria)}</details>"
                    f"<details><summary>exact anchor prompt (the conversation is not in it)</summary><pre>{escape(prompt)}</pre></details>")
    rubrics = "".join(
        f"<details><summary>{escape(name)} ({len(rb['criteria'])} criteria{'; ' + escape(', '.join(rb['flags'])) if rb['flags'] else ''})"
        f"</summary><ol>{''.join(f'<li>{escape(c)}</li>' for c in rb['criteria'])}</ol></details>"
        for name, rb in (r.get("rubrics") or {}).items()
    )
    return (f'<div class="q" id="c{escape(r["id"])}"><h3>{escape(r["id"])}</h3>{turns}'
            f"<table><tr><th>method</th><th>picked</th><th>physician score</th><th>flags</th></tr>{picks}</table>"
            f"{ref_html}{rubrics}{rolls}</div>")


def write_freeform_html(results: list[dict[str, Any]], summary: dict[str, Any], criteria: dict[str, list[dict[str, Any]]],
                        path: Path, title: str) -> Path:
    methods = "".join(f"<tr><td>{escape(m)}</td><td>{s['n']}</td><td>{_score(s['score'])}</td><td>{_score(s['bootstrap_std'])}</td></tr>"
                      for m, s in summary["methods"].items())
    paired = "".join(f"<tr><td>{escape(k)}</td><td>{d['n']}</td><td>{d['diff']:+.3f}</td><td>[{d['lo']:+.3f}, {d['hi']:+.3f}]</td></tr>"
                     for k, d in summary["paired"].items())
    validity = "".join(f"<tr><td>{escape(k)}</td><td>{v['rho']:.3f}</td><td>[{v['lo']:.3f}, {v['hi']:.3f}]</td><td>{v['n_pairs']}</td></tr>"
                       for k, v in summary.get("validity", {}).items())
    head = ("<h2>Physician-rubric score (HealthBench grading: clipped mean, bootstrap std)</h2>"
            f"<table><tr><th>method</th><th>n</th><th>score</th><th>std</th></tr>{methods}</table>"
            f"<h2>Paired differences (bootstrap 95% CI)</h2><table><tr><th>pair</th><th>n</th><th>diff</th><th>95% CI</th></tr>{paired}</table>")
    if validity:
        head += ("<h2>Reward validity: Spearman with the physician score across rollouts (CI resamples conversations)</h2>"
                 f"<table><tr><th>reward</th><th>rho</th><th>95% CI</th><th>rollouts</th></tr>{validity}</table>")
    body = "".join(_conversation(r, criteria.get(r["id"])) for r in results)
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{head}<h2>Conversations</h2>{body}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
