"""The test-time commands: `catrl generate`, `eval`, `answer` and `label`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from catrl import models, prompting
from catrl.cli.common import (AdapterOpt, AnchorFlashOpt, AnchorModelOpt, AnchorUrlOpt, ApiKeyOpt, BaseUrlOpt, CacheOpt, ConcOpt, CtxOpt, EstimatorOpt, GOpt,
                              GroupCtxOpt, guide,
                              MaxSeqsOpt, ModelOpt, NoCacheOpt, ThreadsOpt, TimeoutOpt, app, console, engine_opts, fail, open_pulled,
                              out, policy_and_anchor, progress, sampling_of, stage_ticker)
from catrl.engines.factory import group_context
from catrl.errors import CatrlError
from catrl.estimators import check_estimator, default_estimator


@app.command(epilog=guide("testtime.md") + "; engines and servers: docs/guide/models.md")
def generate(
    data: Annotated[str, typer.Argument(help="Packaged dataset (gsm8k), a .jsonl/.parquet file, or a saved HF dataset dir.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output JSONL (default: <data>.rollouts.jsonl). An existing file is resumed.")] = None,
    field: Annotated[list[str] | None, typer.Option("--field", help="Field map FIELD=COLUMN, e.g. --field question=problem.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N rows.")] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Samples per row (G).")] = 8,
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt file under catrl/prompts ('solve', or 'raw' for the question as is).")] = "solve",
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Top-k sampling (0 = off).")] = 20,
    max_tokens: Annotated[int, typer.Option(help="Max new tokens per sample.")] = 512,
    seed: Annotated[int, typer.Option(help="Sampling seed (sample j of a row uses a seed derived from it).")] = 0,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")] = None,
    model: ModelOpt = models.DEFAULT_MODEL,
    adapter: AdapterOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    max_seqs: MaxSeqsOpt = 32,
    ctx: CtxOpt = 4096,
    threads: ThreadsOpt = None,
    timeout: TimeoutOpt = None,
    concurrency: ConcOpt = 16,
) -> None:
    """Sample n completions per dataset row into JSONL (resumable; every call cached)."""
    from catrl.datasets import load_examples, parse_field_map
    from catrl.rollouts import generate_file
    from catrl.types import Sampling

    try:
        examples = load_examples(data, parse_field_map(field), limit=limit)
        output = output or Path(f"{Path(data).stem}.rollouts.jsonl")
        sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed, stop=tuple(stop or ()))
        engine = open_pulled(engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache, adapter=adapter))
        t0 = time.perf_counter()
        with progress() as prog:
            task = prog.add_task(f"generating {n} x {len(examples)} rows", total=len(examples))
            stats = generate_file(engine, examples, sampling, n, output, prompt=prompt, on_row=lambda d, t: prog.update(task, completed=d))
        dt = time.perf_counter() - t0
        engine.close()
    except CatrlError as e:
        fail(e)
        return
    t = Table("rows", "resumed", "written", "samples", "new tokens", "tok/s", "model calls", "output")
    t.add_row(
        str(stats.rows), str(stats.resumed), str(stats.written), str(stats.written * n), str(stats.completion_tokens),
        f"{stats.completion_tokens / dt:.1f}" if dt > 0 else "-", str(stats.calls_made), str(output),
    )
    out.print(t)
    out.print(f"calls: made={stats.calls_made} rows_written={stats.written} rows_resumed={stats.resumed}")


@app.command("eval", epilog=guide("testtime.md") + "; free-form tasks and HealthBench: docs/guide/freeform.md")
def eval_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="gsm8k, math500, math (the full 5,000-problem MATH test set), or a .jsonl[.gz]/.parquet file or HF dataset dir with a gold field.")] = "gsm8k",
    field: Annotated[list[str] | None, typer.Option("--field", help="Field map FIELD=COLUMN (question, id, gold).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N questions.")] = None,
    g: GOpt = 8,
    methods: Annotated[str | None, typer.Option("--methods", help="Comma list of: single, majority, min_ppl, self_bon, usc, mutual, cat (default single,majority,min_ppl,cat); free-form: single, min_ppl, self_bon, mutual, cat (default single,min_ppl,self_bon,cat).")] = None,
    method_limit: Annotated[list[str] | None, typer.Option("--method-limit", help="Run a method on the first N questions only, e.g. mutual=50.")] = None,
    sweep: Annotated[str, typer.Option("--sweep", help="G values for the accuracy-vs-G plot (first k rollouts reused; values above --g are dropped); '' to skip.")] = "1,2,4,8",
    sweep_limit: Annotated[int | None, typer.Option("--sweep-limit", help="Questions in the sweep (default: all).")] = None,
    match: Annotated[str, typer.Option("--match", help="symbolic (math-verify) or string (the paper's boxed-string match).")] = "symbolic",
    estimator: EstimatorOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: out/eval-<dataset>).")] = None,
    temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20,
    max_tokens: Annotated[int, typer.Option(help="Max new tokens per rollout.")] = 512,
    anchor_max_tokens: Annotated[int, typer.Option(help="Max new tokens of the synthesized reference.")] = 1024,
    seed: int = 0,
    model: ModelOpt = models.DEFAULT_MODEL, adapter: AdapterOpt = None, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    anchor_model: AnchorModelOpt = None, anchor_base_url: AnchorUrlOpt = None, anchor_flash_attn: AnchorFlashOpt = None,
    cache: CacheOpt = None, no_cache: NoCacheOpt = False, max_seqs: MaxSeqsOpt = 32, ctx: GroupCtxOpt = None,
    threads: ThreadsOpt = None, timeout: TimeoutOpt = None, concurrency: ConcOpt = 16,
    grader_model: Annotated[str | None, typer.Option("--grader-model", help="Free-form: the model grading with physician rubrics (default: the policy model).")] = None,
    grader_base_url: Annotated[str | None, typer.Option("--grader-base-url", help="Free-form: the grader on an OpenAI-compatible server.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Free-form: the judge of self-proposed rubrics (default: the grader).")] = None,
    judge_base_url: Annotated[str | None, typer.Option("--judge-base-url", help="Free-form: the judge on an OpenAI-compatible server.")] = None,
    judge_mode: Annotated[str, typer.Option("--judge-mode", help="Free-form: per_criterion (the paper's) or batched judging of self-proposed rubrics.")] = "per_criterion",
    validity: Annotated[bool, typer.Option("--validity", help="Free-form: also compute each candidate reward per rollout and its rank correlation with the physician score.")] = False,
    judge_max_tokens: Annotated[int | None, typer.Option("--judge-max-tokens", help="Free-form: cap on every grader and judge answer (cost control).")] = None,
) -> None:
    """Evaluate test-time CaT against the paper's baselines on one shared set of rollouts; write results, a plot and an HTML audit page.

    A dataset of conversations with physician rubrics (healthbench, healthbench_hard20, or a file in
    HealthBench's format) runs the free-form evaluation instead, graded with HealthBench's grading."""
    from catrl.datasets import load_examples, parse_field_map
    from catrl.evaluate_freeform import examples_need_freeform

    try:
        freeform = examples_need_freeform(load_examples(dataset, parse_field_map(field), limit=1))
    except CatrlError as e:
        fail(e)
        return
    ctx = ctx or group_context(g, max_tokens, anchor_max_tokens)
    if freeform:
        _eval_freeform(dataset, parse_field_map(field), limit, g, methods or "single,min_ppl,self_bon,cat", method_limit, out_dir,
                       sampling_of(temperature, top_p, top_k, max_tokens, seed, logprobs=True),
                       sampling_of(temperature, top_p, top_k, anchor_max_tokens, seed),
                       engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache, adapter=adapter),
                       anchor_model, anchor_base_url, grader_model, grader_base_url, judge_model, judge_base_url, judge_mode, validity,
                       judge_max_tokens, anchor_flash_attn, estimator)
        return
    methods = methods or "single,majority,min_ppl,cat"
    from dataclasses import asdict

    from catrl.evaluate import EvalConfig, run_eval, summarize, write_results
    from catrl.report.html import write_html
    from catrl.report.plots import plot_sweep
    from catrl.report.table import analyses_table, method_table, paired_table

    try:
        limits = _method_limits(method_limit)
        cfg = EvalConfig(
            dataset=dataset, field_map=parse_field_map(field), limit=limit, g=g,
            sampling=sampling_of(temperature, top_p, top_k, max_tokens, seed, logprobs=True),
            anchor_sampling=sampling_of(temperature, top_p, top_k, anchor_max_tokens, seed),
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()), method_limits=limits,
            g_sweep=tuple(k for k in (int(x) for x in sweep.split(",") if x.strip()) if k <= g), sweep_limit=sweep_limit, match=match,
            estimator=estimator or default_estimator("reasoning"),
        )
        cfg.check()
        opts = engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache, adapter=adapter)
        policy, anchor = policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        with progress() as prog:
            tick = stage_ticker(prog)
            results = run_eval(policy, anchor, cfg, progress=tick)
        summary = summarize(results, match)
        summary["config"] = {"dataset": dataset, "limit": limit, "g": g, "policy": policy.identity, "anchor": anchor.identity,
                             "sampling": cfg.sampling.to_dict(), "anchor_sampling": cfg.anchor_sampling.to_dict(), "match": match,
                             "estimator": check_estimator(cfg.estimator, match=match).spec(), "prompts": prompting.provenance()}
        out_dir = out_dir or Path("out") / f"eval-{Path(dataset).stem}"
        write_results(results, summary, out_dir)
        plot = plot_sweep(summary, out_dir / "accuracy_vs_g.png")
        page = write_html([asdict(r) for r in results], summary, out_dir / "report.html", f"CaT on {dataset}", plot.name if plot else None)
    except CatrlError as e:
        fail(e)
        return
    out.print(method_table(summary))
    if summary["paired"]:
        out.print(paired_table(summary))
    out.print(analyses_table(summary))
    out.print(f"results: {out_dir / 'results.jsonl'}  summary: {out_dir / 'summary.json'}  report: {page}" + (f"  plot: {plot}" if plot else ""))


def _method_limits(items: list[str] | None) -> dict[str, int]:
    limits = {}
    for item in items or []:
        name, _, num = item.partition("=")
        if not num.isdigit():
            raise typer.BadParameter(f"--method-limit {item!r}: expected METHOD=N")
        limits[name] = int(num)
    return limits


def _other_engine(opts, policy, model_name, url):
    """The policy's engine unless another model or server is named."""
    from dataclasses import replace

    if model_name is None and url is None and not opts.adapter:
        return policy
    return open_pulled(replace(opts, model=model_name or opts.model, base_url=url, adapter=None))


def _eval_freeform(dataset, field_map, limit, g, methods, method_limit, out_dir, sampling, anchor_sampling, opts,
                   anchor_model, anchor_base_url, grader_model, grader_base_url, judge_model, judge_base_url, judge_mode, validity,
                   judge_max_tokens=None, anchor_flash_attn=None, estimator=None) -> None:
    from dataclasses import asdict

    from catrl.datasets import load_examples
    from catrl.evaluate_freeform import FreeformConfig, run_freeform_eval, summarize_freeform, write_freeform
    from catrl.report.html_freeform import write_freeform_html

    try:
        cfg = FreeformConfig(dataset=dataset, field_map=field_map, limit=limit, g=g, sampling=sampling, anchor_sampling=anchor_sampling,
                             methods=tuple(m.strip() for m in methods.split(",") if m.strip()), method_limits=_method_limits(method_limit),
                             validity=validity, judge_mode=judge_mode, judge_max_tokens=judge_max_tokens,
                             estimator=estimator or default_estimator("freeform"))
        cfg.check()
        policy, anchor = policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        grader = _other_engine(opts, policy, grader_model, grader_base_url)
        judge = _other_engine(opts, grader, judge_model, judge_base_url)
        with progress() as prog:
            tick = stage_ticker(prog)
            results = run_freeform_eval(policy, anchor, grader, cfg, judge=judge, progress=tick)
        summary = summarize_freeform(results)
        summary["config"] = {"dataset": dataset, "limit": limit, "g": g, "policy": policy.identity, "anchor": anchor.identity,
                             "grader": grader.identity, "judge": judge.identity, "sampling": sampling.to_dict(), "judge_mode": judge_mode,
                             "estimator": check_estimator(cfg.estimator, mode="freeform").spec(), "prompts": prompting.provenance()}
        out_dir = out_dir or Path("out") / f"eval-{Path(dataset).stem}"
        write_freeform(results, summary, out_dir)
        criteria = {e.id: [asdict(c) for c in e.criteria or []] for e in load_examples(dataset, field_map, limit)}
        page = write_freeform_html([asdict(r) for r in results], summary, criteria, out_dir / "report.html", f"CaT on {dataset}")
    except CatrlError as e:
        fail(e)
        return
    t = Table("method", "n", "physician score", "bootstrap std", title="free-form (HealthBench grading)")
    for m, s in summary["methods"].items():
        t.add_row(m, str(s["n"]), f"{s['score']:.3f}", f"{s['bootstrap_std']:.3f}")
    out.print(t)
    if summary["paired"]:
        p = Table("pair", "n", "diff", "95% CI")
        for k, d in summary["paired"].items():
            p.add_row(k, str(d["n"]), f"{d['diff']:+.3f}", f"[{d['lo']:+.3f}, {d['hi']:+.3f}]")
        out.print(p)
    if summary["validity"]:
        v = Table("reward", "Spearman with physician score", "95% CI", "rollouts")
        for k, d in summary["validity"].items():
            v.add_row(k, f"{d['rho']:.3f}", f"[{d['lo']:.3f}, {d['hi']:.3f}]", str(d["n_pairs"]))
        out.print(v)
    out.print(f"results: {out_dir / 'results.jsonl'}  summary: {out_dir / 'summary.json'}  report: {page}")


@app.command(epilog=guide("testtime.md"))
def answer(
    question: Annotated[str, typer.Argument(help="The question.")],
    g: GOpt = 8,
    temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = 512, seed: int = 0,
    show_reference: Annotated[bool, typer.Option("--show-reference/--answer-only", help="Print the reference text.")] = True,
    estimator: EstimatorOpt = None,
    model: ModelOpt = models.DEFAULT_MODEL, adapter: AdapterOpt = None, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    anchor_model: AnchorModelOpt = None, anchor_base_url: AnchorUrlOpt = None, anchor_flash_attn: AnchorFlashOpt = None,
    cache: CacheOpt = None, no_cache: NoCacheOpt = False, max_seqs: MaxSeqsOpt = 32, ctx: GroupCtxOpt = None,
    threads: ThreadsOpt = None, timeout: TimeoutOpt = None, concurrency: ConcOpt = 16,
) -> None:
    """Answer one question: G rollouts, their majority answer, and the CaT reference estimated from them (never seeing the question)."""
    from catrl.rollouts import build_request
    from catrl.selection import majority
    from catrl.types import Example
    from catrl.verify import equivalent, extract_answer

    try:
        est = check_estimator(estimator or default_estimator("reasoning"), g)
        opts = engine_opts(model, base_url, api_key, max_seqs, ctx or group_context(g, max_tokens, 2 * max_tokens), threads, timeout,
                           concurrency, cache, no_cache, adapter=adapter)
        policy, anchor = policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        sampling = sampling_of(temperature, top_p, top_k, max_tokens, seed)
        with console.status(f"sampling {g} rollouts"):
            comps = policy.generate([build_request(Example("q", question), "solve")], sampling, n=g)[0]
        texts = [c.text for c in comps]
        with console.status(f"estimating the reference ({est.name}; the anchor does not see the question)"):
            ref = est.estimate(anchor, comps, sampling=sampling_of(temperature, top_p, top_k, 2 * max_tokens, seed))
    except CatrlError as e:
        fail(e)
        return
    t = Table("rollout", "answer", "tokens")
    for i, (c, txt) in enumerate(zip(comps, texts), 1):
        t.add_row(str(i), str(extract_answer(txt)), str(c.completion_tokens))
    out.print(t)
    maj = majority(texts)
    out.print(f"majority answer: [bold]{maj.answer}[/] ({maj.detail.get('votes', 0)}/{g} votes)")
    if show_reference:
        out.print(f"[bold]CaT reference ({est.name}):[/]")
        out.print(ref.text, markup=False, highlight=False)
    out.print(f"CaT answer: [bold]{ref.answer}[/]" + (f"  (flags: {', '.join(ref.flags)})" if ref.flags else ""))
    agree = ref.answer is not None and maj.answer is not None and equivalent(maj.answer, ref.answer).equal
    # on the small models measured (docs/reference_estimators) the vote is often the better answer: say when they differ
    out.print("CaT and the majority vote agree." if agree else f"[yellow]CaT and the majority vote disagree[/] (majority: {maj.answer})")


@app.command(epilog=guide("testtime.md") + "; --task freeform: docs/guide/freeform.md")
def label(
    data: Annotated[str, typer.Argument(help="Unlabeled questions: packaged name, .jsonl/.parquet, or a saved HF dataset dir.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL (resumed if it exists).")],
    field: Annotated[list[str] | None, typer.Option("--field", help="Field map FIELD=COLUMN.")] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    g: GOpt = 8,
    task: Annotated[str, typer.Option("--task", help="verifiable (reference + final answer) or freeform (reference + self-proposed rubric).")] = "verifiable",
    estimator: EstimatorOpt = None,
    temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = 512, seed: int = 0,
    model: ModelOpt = models.DEFAULT_MODEL, adapter: AdapterOpt = None, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    anchor_model: AnchorModelOpt = None, anchor_base_url: AnchorUrlOpt = None, anchor_flash_attn: AnchorFlashOpt = None,
    cache: CacheOpt = None, no_cache: NoCacheOpt = False, max_seqs: MaxSeqsOpt = 32, ctx: GroupCtxOpt = None,
    threads: ThreadsOpt = None, timeout: TimeoutOpt = None, concurrency: ConcOpt = 16,
) -> None:
    """Label an unlabeled dataset with CaT references (no gold used): reference text plus answer and agreement stats, or (--task freeform) a rubric. Resumable."""
    from catrl.datasets import load_examples, parse_field_map
    from catrl.labeling import label_file

    try:
        mode = "reasoning" if task == "verifiable" else "freeform"
        est = check_estimator(estimator or default_estimator(mode), g, mode)
        examples = load_examples(data, parse_field_map(field), limit=limit)
        opts = engine_opts(model, base_url, api_key, max_seqs, ctx or group_context(g, max_tokens, 2 * max_tokens), threads, timeout,
                           concurrency, cache, no_cache, adapter=adapter)
        policy, anchor = policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        with progress() as prog:
            bar = prog.add_task(f"labeling {len(examples)} rows (G={g})", total=len(examples))
            stats = label_file(policy, anchor, examples, sampling_of(temperature, top_p, top_k, max_tokens, seed),
                               sampling_of(temperature, top_p, top_k, 2 * max_tokens, seed), g, output,
                               on_row=lambda d, t: prog.update(bar, completed=d), task=task,
                               prompt="solve" if task == "verifiable" else "raw", estimator=est)
    except CatrlError as e:
        fail(e)
        return
    agree = f"; reference agrees with the majority on {stats['agree_with_majority']}/{stats['written']}" if task == "verifiable" else ""
    out.print(f"labeled {stats['written']} rows ({stats['resumed']} already done) -> {output}{agree}")
