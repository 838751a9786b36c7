"""The `catrl` command. The CLI owns the terminal (rich tables, progress bars); the library logs.
One module per group of subcommands; each registers its commands on the shared typer app."""

from __future__ import annotations

import logging

from catrl.cli import store, testtime, training  # noqa: F401  (they register their commands on `app`)
from catrl.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
