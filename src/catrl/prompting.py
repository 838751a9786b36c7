"""Prompts are text files under catrl/prompts/ with {{name}} placeholders, loaded by name.

Placeholders use double braces so LaTeX such as \\boxed{} needs no escaping. Every placeholder must
be filled and no unknown field may be passed, so a typo fails loudly instead of sending a prompt
with a hole in it.

The paper's prompt texts are not public, so users will want to try their own: a directory named by
CATRL_PROMPTS (or `catrl --prompts DIR`) holding `<name>.txt` files replaces those packaged prompts,
and only those. An override must use exactly the packaged prompt's placeholders. The exact text sent
is in every audit record and is part of every call-cache key, so runs with different prompts never
share calls.
"""

from __future__ import annotations

import os
import re
from functools import cache
from importlib import resources
from pathlib import Path

from catrl.errors import InputError

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def available() -> list[str]:
    return sorted(p.name[:-4] for p in (resources.files("catrl") / "prompts").iterdir() if p.name.endswith(".txt"))


ENV = "CATRL_PROMPTS"


def override_dir() -> Path | None:
    """The directory whose `<name>.txt` files replace packaged prompts (CATRL_PROMPTS), if set."""
    d = os.environ.get(ENV)
    if not d:
        return None
    path = Path(d).expanduser()
    if not path.is_dir():
        raise InputError(f"{ENV}={d}: not a directory")
    return path


def load(name: str) -> str:
    d = override_dir()
    if d is not None:
        _check_names(str(d))
    return _load(name, str(d) if d else None)


@cache
def _check_names(override: str) -> None:
    """A misspelt file name would otherwise be ignored without a word and the packaged prompt used."""
    known = set(available())
    for f in sorted(Path(override).glob("*.txt")):
        if f.stem not in known:
            raise InputError(f"{f}: no packaged prompt named {f.stem!r} to replace; available: {', '.join(sorted(known))}")


@cache
def _load(name: str, override: str | None) -> str:
    text = _packaged(name)
    if override is not None and (f := Path(override) / f"{name}.txt").is_file():
        mine = f.read_text(encoding="utf-8")
        need, got = set(PLACEHOLDER.findall(text)), set(PLACEHOLDER.findall(mine))
        if need != got:
            raise InputError(f"{f}: prompt {name!r} must use the placeholders {sorted(need)}; "
                             f"missing {sorted(need - got)}, unknown {sorted(got - need)}")
        return mine
    return text


def use_dir(path: str | os.PathLike | None) -> str | None:
    """Make `path` (or, if None, the CATRL_PROMPTS already set) the override directory of this process
    and the processes it starts; checks it at once and returns its absolute path, or None."""
    if path is not None:
        os.environ[ENV] = str(Path(path).expanduser().resolve())
    d = override_dir()
    if d is None:
        return None
    _check_names(str(d))
    for name in overridden():
        load(name)  # a wrong placeholder fails here, before any model is loaded
    return str(d)


def overridden() -> list[str]:
    """Names of the packaged prompts the override directory replaces (for run configs and reports)."""
    d = override_dir()
    return [n for n in available() if (d / f"{n}.txt").is_file()] if d else []


def provenance() -> dict[str, object] | None:
    """What a run's config records about replaced prompts: the directory and the names it replaced."""
    d = override_dir()
    return {"dir": str(d), "replaced": overridden()} if d else None


@cache
def _packaged(name: str) -> str:
    f = resources.files("catrl") / "prompts" / f"{name}.txt"
    if not f.is_file():
        raise InputError(f"no prompt named {name!r}; available: {', '.join(available())}")
    return f.read_text(encoding="utf-8")


def fields(name: str) -> set[str]:
    return set(PLACEHOLDER.findall(load(name)))


def render(name: str, **values: str) -> str:
    """Fill a packaged prompt's placeholders in one pass (inserted text is never re-scanned)."""
    return fill(load(name), name, **values)


def fill(template: str, name: str = "<text>", **values: str) -> str:
    """Fill a prompt text (a packaged one, or a file being compared with it) the same strict way."""
    need = set(PLACEHOLDER.findall(template))
    missing, extra = need - values.keys(), values.keys() - need
    if missing or extra:
        raise InputError(f"prompt {name!r} needs fields {sorted(need)}; missing {sorted(missing)}, unexpected {sorted(extra)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
