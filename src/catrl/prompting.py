"""Prompts are text files under catrl/prompts/ with {{name}} placeholders, loaded by name.

Placeholders use double braces so LaTeX such as \\boxed{} needs no escaping. Every placeholder must
be filled and no unknown field may be passed, so a typo fails loudly instead of sending a prompt
with a hole in it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from catrl.errors import InputError

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def available() -> list[str]:
    return sorted(p.name[:-4] for p in (resources.files("catrl") / "prompts").iterdir() if p.name.endswith(".txt"))


@cache
def load(name: str) -> str:
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
