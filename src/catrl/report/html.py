"""One self-contained HTML page per evaluation run: the summary, then every question with its
rollouts, their answers, the majority answer, the synthesized reference, and every verdict.
All model text is HTML-escaped: it is data on this page too."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from catrl.report.table import analysis_label, format_figure

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.ok{color:#070}.bad{color:#a00}.q{border-top:2px solid #333;margin-top:2em;padding-top:.5em}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px;font-size:13px}
details{margin:.3em 0}summary{cursor:pointer}
"""


def mark(ok: bool | None) -> str:
    if ok is None:
        return "-"
    return '<span class="ok">right</span>' if ok else '<span class="bad">wrong</span>'


def _summary_table(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(m)}</td><td>{a['n']}</td><td>{a['mean']:.3f}</td><td>[{a['lo']:.3f}, {a['hi']:.3f}]</td></tr>"
        for m, a in summary["methods"].items()
    )
    paired = "".join(
        f"<tr><td>{escape(k)}</td><td>{d['n']}</td><td>{d['diff']:+.3f}</td><td>[{d['lo']:+.3f}, {d['hi']:+.3f}]</td>"
        f"<td>{d['a_only']}/{d['b_only']}</td><td>{d['mcnemar_p']:.3g}</td></tr>"
        for k, d in summary["paired"].items()
    )
    an = summary.get("analyses") or {}
    analyses = "".join(f'<tr><td title="summary.json: {escape(k)}">{escape(analysis_label(k))}</td><td>{escape(_fmt(v))}</td></tr>'
                       for k, v in an.items())
    return (
        "<h2>Accuracy (95% Wilson CI)</h2><table><tr><th>method</th><th>n</th><th>accuracy</th><th>95% CI</th></tr>"
        f"{rows}</table><h2>Paired differences (bootstrap 95% CI, McNemar exact)</h2><table><tr><th>pair</th><th>n</th>"
        f"<th>diff</th><th>95% CI</th><th>only first / only second right</th><th>p</th></tr>{paired}</table>"
        f"<h2>Analyses</h2><table>{analyses}</table>"
    )


def _fmt(v: Any) -> str:
    return format_figure(v, ci="95% CI ")


def _nll(v: float | None) -> str:
    return "" if v is None else f", mean NLL {v:.3f}"


def _question(r: dict[str, Any]) -> str:
    verdicts = "".join(
        f"<tr><td>{escape(m)}</td><td>{escape(str(v.get('index')))}</td><td>{escape(str(v.get('answer')))}</td>"
        f"<td>{mark(v.get('correct'))}</td><td>{escape(', '.join(v.get('flags') or []))}</td></tr>"
        for m, v in r["methods"].items()
    )
    rolls = "".join(
        f"<details><summary>rollout {i + 1}: answer <b>{escape(str(x['answer']))}</b> {mark(x['correct'])}"
        f" ({escape(x['finish_reason'])}{_nll(x.get('mean_nll'))})</summary>"
        f"<pre>{escape(x['text'])}</pre></details>"
        for i, x in enumerate(r["rollouts"])
    )
    ref = r.get("reference")
    ref_html = ""
    if ref:
        prompt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in ref["prompt"])
        ref_html = (
            f"<p>CaT reference answer: <b>{escape(str(ref['answer']))}</b> {mark(ref.get('correct'))} · {estimated_by(ref)}</p>"
            f"<details><summary>synthesized reference</summary><pre>{escape(ref['text'])}</pre></details>"
            f"<details><summary>exact anchor prompt (the question is not in it)</summary><pre>{escape(prompt)}</pre></details>"
        )
    return (
        f'<div class="q" id="q{escape(r["id"])}"><h3>#{escape(r["id"])}</h3><pre>{escape(r["question"])}</pre>'
        f"<p>gold: <b>{escape(str(r['gold']))}</b> · majority: <b>{escape(str(r['majority'].get('answer')))}</b>"
        f" ({escape(str(r['majority'].get('votes', 0)))} votes)</p>{ref_html}"
        f"<table><tr><th>method</th><th>chosen</th><th>answer</th><th>verdict</th><th>flags</th></tr>{verdicts}</table>{rolls}</div>"
    )


def write_html(results: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str, plot: str | None = None) -> Path:
    img = f'<img src="{escape(plot)}" alt="accuracy vs G">' if plot else ""
    body = "".join(_question(r) for r in results)
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{_summary_table(summary)}{img}<h2>Questions</h2>{body}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def estimated_by(ref: dict[str, Any], flags: bool = True) -> str:
    """The reference's estimator, its parameters, the candidate order the anchor read, and its flags (escaped)."""
    est = ref.get("estimator") or {"name": "synthesis"}
    params = ", ".join(f"{k}={v}" for k, v in est.items() if k != "name")
    order = ref.get("order")
    text = f"estimator {est['name']}" + (f" ({params})" if params else "")
    if order:
        text += f"; candidates read in the order {' '.join(str(i + 1) for i in order)}"
    if flags and ref.get("flags"):
        text += f"; flags: {', '.join(ref['flags'])}"
    return escape(text)
