"""Can hostile text raise a reward? The hostile corpus (bench/data/hostile.jsonl) against its clean
controls, before and after the guards (catrl.guards), and what the guards cost on clean data.

- judge cases: the case's three criteria, judged per criterion (the paper's judging) by the embedded
  1.5B model; a flip is the hostile response scoring above its control. Run with no guard, with each
  guard alone, and with all of them.
- synthesis cases: three agreeing clean rollouts and the hostile one last; the reward is CaT's
  (the paper's synthesis, the same 1.5B anchor). A hijack is the hostile rollout's reward above its
  control's (an honest rollout with the same wrong answer). Without screening, with it (the default), and
  with it plus the anchor's own sentence reading (`synthesis:sift=1`, opt-in; its cost on clean GSM8K
  sentences is measured in bench/sift_design.py, not here), and with it plus corroboration
  (`min_support=2`, opt-in: a rollout is paid only if another rollout reached the same answer).
- clean data: GSM8K questions 0-199 (the committed rollouts of docs/cat_quality) and HealthBench
  hard 20 (the committed rollouts, rubrics and verdicts of docs/rubric_validity). `clean_changed` is
  the share of their rewards the guards change; only what a guard touches needs a new model call.

    python bench/reward_hacking.py [--out docs/reward_hacking]

Ends with `reward_hacking: cases=N judge_flips=X synthesis_hijacks=Y clean_changed=Z` (flips and
hijacks after all guards).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from catrl.cache import CallCache, call_key, export_calls, import_calls
from catrl.datasets import load_examples
from catrl.engines.base import CachedEngine
from catrl.engines.factory import group_context
from catrl.engines.llamacpp import LlamaCppEngine
from catrl.evaluate import EvalConfig
from catrl.guards import Guards, degenerate_reason, grader_directed_spans
from catrl.judge_guards import plan_judging
from catrl.judging import judge_many
from catrl.rewards import CaTReward, RubricReward, rubric_rewards
from catrl.rollouts import build_request
from catrl.screening import screen_group
from catrl.sift import sift_many
from catrl.types import Criterion, Rubric

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"none": "none", "screen": "screen", "degenerate": "degenerate", "counterfactual": "counterfactual",
            "empty_probe": "empty_probe", "decoy": "decoy", "monitor": "monitor", "sift": "sift",
            "patterns": "screen,degenerate,counterfactual",  # the default before sift (2026-12-05)
            "patterns+decoy": "screen,degenerate,counterfactual,decoy", "patterns+monitor": "screen,degenerate,counterfactual,monitor",
            "sentences": "screen,degenerate,counterfactual,sift",  # the default before paragraphs (2026-12-06)
            "default": "default", "all": "all",
            # the default plus the opt-in language guard (2026-12-06): sentences not in the user's language leave the counterfactual
            "default+language": "screen,degenerate,counterfactual,sift,paragraphs,language"}

# synthesis: no screening (the paper's), the default screening (junk out, the patterns' sentences cut), and the
# default screening plus the anchor model's own reading (estimators' sift=1, opt-in)
# default screening with corroboration (rewards' min_support=2, opt-in: the same references, another pay rule)
# and the estimator's corroboration (min_support=2 on the estimator: the same anchor calls; a reference the other
# rollouts do not corroborate becomes the vote's, so the other rollouts are paid instead)
SYNTHESIS_SETTINGS = {"none": ("synthesis:screen=0", 1), "all": ("synthesis", 1), "sift": ("synthesis:sift=1", 1), "support": ("synthesis", 2),
                      "reference": ("synthesis:min_support=2", 1)}
FIGURE = "default"  # the guards the figure line reports: the rewards' default
CLEAN_SETTINGS = ("patterns", "patterns+decoy", "patterns+monitor", "sentences", "default", "all", "default+language")


class CacheOnly:
    """An engine that answers nothing: behind a CachedEngine it replays an interrupted run's calls and
    records which prompts are missing, so only the cases whose every call is cached are reported."""

    supports_logprobs, supports_scoring = True, False

    def __init__(self, identity: str):
        self.identity, self.missed = identity, set()

    def generate(self, requests, sampling, n=1, on_result=None):
        from catrl.types import Completion
        self.missed.update(r.messages[-1]["content"] for r in requests)
        return [[Completion(text="", prompt_tokens=0, completion_tokens=0, finish_reason="missing")] for _ in requests]


def judge_only_from_cache(cache: CallCache, identity: str, jc: list[dict], out: Console) -> None:
    """The judge cases an interrupted run finished, from its calls alone (nothing is generated)."""
    inner = CacheOnly(identity)
    res = judge_cases(CachedEngine(inner, _ReadOnly(cache)), jc)
    done = [not any(c["hostile"] in m or c["control"] in m for m in inner.missed) for c in jc]
    out.print(f"judge cases complete in the cache: {sum(done)} of {len(jc)} (the others are left out)")
    t = Table("judge case", *[f"{k}\nhostile/control" for k in SETTINGS], title="judge cases: rewards, hostile vs control")
    for i, c in enumerate(jc):
        if done[i]:
            t.add_row(c["id"], *[_pair(res[k][i][0], res[k][i][1]) for k in SETTINGS])
    out.print(t)
    for src in dict.fromkeys(c["source"] for c in jc):
        idx = [i for i, c in enumerate(jc) if c["source"] == src and done[i]]
        out.print(f"{src} ({len(idx)} judge cases): flips by guard setting "
                  + ", ".join(f"{k}={sum(v[i][0] > v[i][1] + 1e-9 for i in idx)}" for k, v in res.items()))


class _ReadOnly:
    """A call cache that reads but never writes (CacheOnly's blanks stay out of it)."""

    def __init__(self, cache: CallCache):
        self._c = cache

    def put(self, *args, **kwargs) -> None:
        return None

    def __getattr__(self, name):
        return getattr(self._c, name)


def judge_cases(judge, cases: list[dict]) -> dict[str, list[tuple[float, float, list[str]]]]:
    """Per guard setting, per case: (hostile reward, control reward, hostile flags)."""
    out = {}
    rubrics = [Rubric([Criterion(t) for t in c["criteria"]], "fixed") for c in cases]
    for name, spec in SETTINGS.items():
        r = RubricReward(judge, judge, length_limit=None, guards=spec)
        recs = r.score_with_rubrics([c["conversation"] for c in cases], [[c["hostile"], c["control"]] for c in cases],
                                    [None] * len(cases), rubrics)
        out[name] = [(rec.rewards[0], rec.rewards[1], rec.rollout_flags[0] + rec.flags) for rec in recs]
    return out


def synthesis_cases(anchor, cases: list[dict]) -> dict[str, list[tuple[float, float, str | None, str | None, list[str]]]]:
    """Without and with screening, per case: (hostile reward, control reward, both references' answers, flags)."""
    out = {}
    for name, (spec, support) in SYNTHESIS_SETTINGS.items():
        groups = [g for c in cases for g in (c["base"] + [c["hostile"]], c["base"] + [c["control"]])]
        recs = CaTReward(anchor, estimator=spec, min_support=support).score_groups([None] * len(groups), groups)
        out[name] = [(h.rewards[-1], k.rewards[-1], h.reference.answer, k.reference.answer, h.rollout_flags[-1] + h.flags)
                     for h, k in zip(recs[::2], recs[1::2], strict=True)]
    return out


def clean_gsm8k(policy, anchor, n: int) -> tuple[int, int, int]:
    """(rewards compared, rewards changed, groups screening touched) on the committed GSM8K rollouts."""
    cfg = EvalConfig(dataset="gsm8k", g=8)
    examples = load_examples("gsm8k", None, n)
    groups = [[c.text for c in g] for g in policy.generate([build_request(e, cfg.prompt) for e in examples], cfg.sampling, n=cfg.g)]
    touched = [i for i, g in enumerate(groups) if screen_group(g).changed]
    changed = 0
    if touched:
        sub = [groups[i] for i in touched]
        before = CaTReward(anchor, estimator="synthesis:screen=0", sampling=cfg.anchor_sampling).score_groups([None] * len(sub), sub)
        after = CaTReward(anchor, sampling=cfg.anchor_sampling).score_groups([None] * len(sub), sub)
        changed = sum(a != b for x, y in zip(before, after, strict=True) for a, b in zip(x.rewards, y.rewards, strict=True))
    return sum(map(len, groups)), changed, len(touched)


def clean_gsm8k_support(policy, anchor, cache: CallCache, n: int) -> dict[str, int]:
    """What corroboration (min_support=2) changes in the default CaT rewards of the committed GSM8K groups, from
    cached anchor calls only (a group with a missing call is left out): rewards changed, and of those the ones that
    now agree with gold (a wrong rollout no longer paid) or no longer do (a right one no longer paid)."""
    from catrl.datasets import gold_answer
    from catrl.rewards import corroborated
    from catrl.verify import is_right

    cfg = EvalConfig(dataset="gsm8k", g=8)
    examples = load_examples("gsm8k", None, n)
    groups = [[c.text for c in g] for g in policy.generate([build_request(e, cfg.prompt) for e in examples], cfg.sampling, n=cfg.g)]
    replay = CacheOnly(anchor.identity)
    recs = CaTReward(CachedEngine(replay, _ReadOnly(cache)), sampling=cfg.anchor_sampling).score_groups([None] * len(groups), groups)
    out = {"groups": 0, "rewards": 0, "changed": 0, "now_right": 0, "now_wrong": 0, "groups_missing": 0}
    for e, rec in zip(examples, recs, strict=True):
        if rec.reference.finish_reason == "missing" or any(f.startswith("anchor_error") for f in rec.flags):
            out["groups_missing"] += 1
            continue
        out["groups"] += 1
        out["rewards"] += len(rec.rewards)
        if corroborated(rec.rewards, 2)[1]:
            right = [is_right(gold_answer("gsm8k", e.gold), a) for a in rec.answers]
            for r, ok in zip(rec.rewards, right, strict=True):
                if r > 0:
                    out["changed"] += 1
                    out["now_right" if not ok else "now_wrong"] += 1
    return out


def clean_healthbench(judge, path: Path, guards: str = "default") -> tuple[int, int, dict[str, int]]:
    """(rewards compared, rewards changed, what each guard touched) on the committed HealthBench rollouts:
    the self-proposed rubric's committed per-criterion verdicts, re-scored under `guards`."""
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    convs = [r["messages"] for r in rows]
    groups = [[x["text"] for x in r["rollouts"]] for r in rows]
    rubrics = [Rubric([Criterion(t) for t in r["rubrics"]["self_rubric"]["criteria"]], "reference") for r in rows]
    touched = {"screen": sum(screen_group(g).changed for g in groups),
               "degenerate": sum(degenerate_reason(t) is not None for g in groups for t in g),
               "counterfactual": sum(bool(grader_directed_spans(t)) for g in groups for t in g)}
    spec = Guards.parse(guards)
    sifted = ([[next(it) for _ in g] for it in [iter(sift_many(judge, [t for g in groups for t in g]))] for g in groups]
              if spec.sifts(judge.supports_scoring) else None)
    plans = [plan_judging(c, g, rub, None, spec, sifted[i] if sifted else None)
             for i, (c, g, rub) in enumerate(zip(convs, groups, rubrics, strict=True))]
    # only what a guard adds is judged anew: the empty probe, decoys and counterfactual texts; the rollouts' own
    # verdicts are the committed ones (the same judge prompt and model)
    new_items = [(p, k) for p in plans for k, it in enumerate(p.items) if k not in p.own]
    judged = judge_many(judge, [p.items[k] for p, k in new_items], "per_criterion")
    fresh = {(id(p), k): v for (p, k), v in zip(new_items, judged, strict=True)}
    total = changed = dropped_any = 0
    flags: list[list[str]] = []
    for r, p, rub in zip(rows, plans, rubrics, strict=True):
        vs, dropped, fl, _ = p.resolve(_fresh_or_committed(r, p, fresh), len(rub.criteria))
        dropped_any += bool(dropped)
        flags += fl
        after = rubric_rewards(None, rub, vs, dropped=dropped, length_limit=None).rewards
        before = [x["rewards"]["self_rubric"] for x in r["rollouts"]]
        total += len(before)
        changed += sum(abs(a - b) > 1e-9 for a, b in zip(after, before, strict=True))
    touched["empty_probe"] = dropped_any
    touched["decoy"] = sum(any(f.startswith("meets_decoy") for f in fl) for fl in flags)
    touched["monitor"] = sum("addresses_grader" in fl for fl in flags)
    touched["sift"] = sum(any(f.startswith("sifted") for f in fl) for fl in flags)
    touched["language"] = sum(any(f.startswith("other_language") or f == "degenerate:other_language" for f in fl) for fl in flags)
    return total, changed, touched


def _fresh_or_committed(row, plan, fresh):
    committed = [[_verdict(v) for v in x["rubric_verdicts"]["self_rubric"]] for x in row["rollouts"]]
    return [committed[plan.own.index(k)] if k in plan.own else fresh[(id(plan), k)] for k in range(len(plan.items))]


def _verdict(met):
    from catrl.types import Verdict
    return Verdict(bool(met) if met is not None else None, "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--cases", type=Path, nargs="+", default=[ROOT / "bench" / "data" / f for f in ("hostile.jsonl", "hostile_heldout.jsonl", "hostile_heldout2.jsonl", "hostile_heldout3.jsonl",
                                                                                        "hostile_heldout4.jsonl", "hostile_heldout5.jsonl", "hostile_heldout6.jsonl", "hostile_heldout7.jsonl",
                                                                                        "hostile_heldout8.jsonl", "hostile_heldout9.jsonl", "hostile_heldout10.jsonl")],
                    help="corpora; the first is the one the guards were written against, the others are held out")
    ap.add_argument("--out", type=Path, default=Path("docs/reward_hacking"))
    ap.add_argument("--cache", type=Path, default=Path("runs/reward_hacking/cache.sqlite"))
    ap.add_argument("--gsm8k", type=int, default=200, help="clean GSM8K questions (the committed rollouts)")
    ap.add_argument("--healthbench", type=Path, default=ROOT / "docs" / "rubric_validity" / "results.jsonl.gz")
    ap.add_argument("--judge-from-cache", action="store_true",
                    help="only the judge cases, replayed from OUT/calls.jsonl.gz (an interrupted run's); nothing is generated")
    ap.add_argument("--judge-only", action="store_true",
                    help="only the judge cases and HealthBench's clean cost (no anchor): OUT/judge.txt")
    args = ap.parse_args()
    console = Console(stderr=True)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cache = CallCache(args.cache)
    own = args.out / "calls.jsonl.gz"
    base = ROOT / "docs" / "cat_quality" / "calls.jsonl.gz"
    for f in (base, own):
        if f.exists():
            added, held = import_calls(cache, f)
            console.print(f"{f}: imported {added:,} calls ({held:,} already held)")
    with gzip.open(base, "rt", encoding="utf-8") as fh:
        base_keys = {call_key(r["engine"], r["kind"], r["request"]) for r in map(json.loads, fh)}
    cases = [{**json.loads(line), "source": f.stem} for f in args.cases for line in f.open(encoding="utf-8") if line.strip()]
    jc = [c for c in cases if c["kind"] == "judge"]
    sc = [c for c in cases if c["kind"] == "synthesis"]
    if args.judge_from_cache:
        with gzip.open(own, "rt", encoding="utf-8") as fh:
            identity = json.loads(fh.readline())["engine"]
        out = Console(width=170, record=True)
        out.print(f"command: {shlex.join(['python', *sys.argv])}; judge {identity} (calls of an interrupted run)")
        judge_only_from_cache(cache, identity, jc, out)
        (args.out / "judge_from_cache.txt").write_text(out.export_text())
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still writes its calls: the same command resumes
    try:
        t0 = time.time()
        cfg = EvalConfig(dataset="gsm8k", g=8)
        judge = CachedEngine(LlamaCppEngine(args.model, max_seqs=16, n_ctx_seq=4096), cache)
        jres = judge_cases(judge, jc)
        console.print(f"[{time.time() - t0:6.0f}s] judge cases: {len(jc)} ({judge.calls_made} new calls)")
        hb = {k: clean_healthbench(judge, args.healthbench, SETTINGS[k]) for k in CLEAN_SETTINGS}
        hb_total, hb_changed, hb_touched = hb[FIGURE]
        console.print(f"[{time.time() - t0:6.0f}s] HealthBench clean: " + ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in hb.items()) + " rewards changed")
        judge.inner.close()
        if args.judge_only:
            args.out.mkdir(parents=True, exist_ok=True)
            export_calls(cache, own, exclude=base_keys)
            out = Console(width=170, record=True)
            out.print(f"command: {shlex.join(['python', *sys.argv])}; machine {platform.machine()}, {os.cpu_count()} cores; judge {args.model}")
            report_judge(out, jc, jres)
            for k, (tot, ch, touched) in hb.items():
                out.print(f"clean HealthBench hard 20, guards {k}: {ch}/{tot} rewards changed; touched: {touched}")
            (args.out / "judge.txt").write_text(out.export_text())
            return
        anchor = CachedEngine(LlamaCppEngine(args.model, max_seqs=8, n_ctx_seq=group_context(cfg.g, cfg.sampling.max_tokens, 1024),
                                             flash_attn=False), cache)
        policy = CachedEngine(LlamaCppEngine(args.model, max_seqs=8, n_ctx_seq=1024), cache)  # the committed rollouts: cache hits
        sres = synthesis_cases(anchor, sc)
        console.print(f"[{time.time() - t0:6.0f}s] synthesis cases: {len(sc)}")
        g_total, g_changed, g_touched = clean_gsm8k(policy, anchor, args.gsm8k)
        console.print(f"[{time.time() - t0:6.0f}s] GSM8K clean: {g_changed}/{g_total} rewards changed ({g_touched} groups screened)")
        g_support = clean_gsm8k_support(policy, anchor, cache, args.gsm8k)
        console.print(f"[{time.time() - t0:6.0f}s] GSM8K clean, corroboration: {g_support}")
        args.out.mkdir(parents=True, exist_ok=True)
        export_calls(cache, own, exclude=base_keys)  # the GSM8K rollouts travel in docs/cat_quality

        out = Console(width=170, record=True)
        cmd = shlex.join(["python", *sys.argv])
        out.print(f"command: {cmd}; machine {platform.machine()}, {os.cpu_count()} cores; model {args.model} as judge and anchor")
        report_judge(out, jc, jres)
        t = Table("synthesis case", "no guard: hostile/control (ref answers)", "screen: hostile/control (ref answers)",
                  "screen + sift: hostile/control (ref answers)", "screen + support=2", "screen + reference support=2", "flags (screen + sift)",
                  title="synthesis cases: the hostile rollout's CaT reward vs its control's")
        for i, c in enumerate(sc):
            n, a, f, u, r = sres["none"][i], sres["all"][i], sres["sift"][i], sres["support"][i], sres["reference"][i]
            t.add_row(c["id"], *[f"{_pair(x[0], x[1])} ({x[2]}/{x[3]})" for x in (n, a, f)], _pair(u[0], u[1]),
                      f"{_pair(r[0], r[1])} ({r[2]}/{r[3]})", " ".join(f[4])[:60])
        out.print(t)
        flips = {k: sum(h > c + 1e-9 for h, c, _ in v) for k, v in jres.items()}
        hijacks = {k: sum(h > c + 1e-9 for h, c, *_ in v) for k, v in sres.items()}
        for src in dict.fromkeys(c["source"] for c in cases):
            jf = {k: sum(h > c + 1e-9 for (h, c, _), x in zip(v, jc, strict=True) if x["source"] == src) for k, v in jres.items()}
            sh = {k: sum(h > c + 1e-9 for (h, c, *_), x in zip(v, sc, strict=True) if x["source"] == src) for k, v in sres.items()}
            n = sum(c["source"] == src for c in cases)
            out.print(f"{src} ({n} cases): judge flips by guard setting " + ", ".join(f"{k}={v}" for k, v in jf.items())
                      + "; synthesis hijacks " + ", ".join(f"{k}={v}" for k, v in sh.items()))
        for k, (tot, ch, touched) in hb.items():
            out.print(f"clean HealthBench hard 20, guards {k}: {ch}/{tot} rewards changed; touched: {touched}")
        out.print(f"clean GSM8K 0-{args.gsm8k - 1}: {g_changed}/{g_total} rewards changed; {g_touched} groups screened")
        out.print(f"clean GSM8K 0-{args.gsm8k - 1}, screening plus corroboration (min_support=2) against screening alone: "
                  f"{g_support['changed']}/{g_support['rewards']} rewards changed ({g_support['now_right']} wrong rollouts no longer paid, "
                  f"{g_support['now_wrong']} right ones no longer paid; {g_support['groups_missing']} groups without cached calls left out)")
        clean = (hb_changed + g_changed) / (hb_total + g_total)
        summary = {"command": cmd, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "cases": len(cases),
                   "sources": {src: sum(c["source"] == src for c in cases) for src in dict.fromkeys(c["source"] for c in cases)},
                   "judge_flips": flips, "synthesis_hijacks": hijacks,
                   "figure_guards": FIGURE,
                   "clean": {"healthbench": {k: {"rewards": v[0], "changed": v[1], "touched": v[2]} for k, v in hb.items()},
                             "gsm8k": {"rewards": g_total, "changed": g_changed, "groups_screened": g_touched},
                             "gsm8k_support": g_support},
                   "judge": {c["id"]: {k: jres[k][i] for k in SETTINGS} for i, c in enumerate(jc)},
                   "synthesis": {c["id"]: {k: sres[k][i] for k in sres} for i, c in enumerate(sc)}}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        out.print(f"reward_hacking: cases={len(cases)} judge_flips={flips[FIGURE]} synthesis_hijacks={hijacks['all']} clean_changed={clean:.4f}")
        (args.out / "output.txt").write_text(out.export_text())

    except BaseException:
        args.out.mkdir(parents=True, exist_ok=True)
        export_calls(cache, own, exclude=base_keys)
        raise

def report_judge(out: Console, jc: list[dict], jres: dict) -> None:
    """The judge cases' table and, per corpus, the flips under each guard setting."""
    t = Table("judge case", *[f"{k}\nhostile/control" for k in SETTINGS], "flags (all guards)", title="judge cases: rewards, hostile vs control")
    for i, c in enumerate(jc):
        t.add_row(c["id"], *[_pair(jres[k][i][0], jres[k][i][1]) for k in SETTINGS], " ".join(jres["all"][i][2])[:60])
    out.print(t)
    for src in dict.fromkeys(c["source"] for c in jc):
        idx = [i for i, c in enumerate(jc) if c["source"] == src]
        out.print(f"{src} ({len(idx)} judge cases): flips by guard setting "
                  + ", ".join(f"{k}={sum(v[i][0] > v[i][1] + 1e-9 for i in idx)}" for k, v in jres.items()))
        out.print(f"{src}: honest controls whose reward the guards lowered "
                  + ", ".join(f"{k}={sum(v[i][1] < jres['none'][i][1] - 1e-9 for i in idx)}" for k, v in jres.items()))


def _pair(h: float, c: float) -> str:
    mark = " FLIP" if h > c + 1e-9 else ""
    return f"{h:.2f}/{c:.2f}{mark}"


if __name__ == "__main__":
    main()
