"""The README and the guide stay navigable: every relative link resolves, and every command's
--help names an existing guide page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from catrl.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
GUIDE = re.compile(r"docs/guide/[\w.-]+\.md")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", _prose(page.read_text(encoding="utf-8")), flags=re.M)}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text(encoding="utf-8"))) if not re.match(r"[a-z][\w+.-]*:", t)]


def test_the_guide_has_a_page_per_job():
    names = {p.name for p in PAGES}
    assert {"testtime.md", "freeform.md", "training.md", "scaling.md", "models.md", "prompts.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    links = relative_links(page)
    assert links, f"{page}: no relative links found (is the link pattern still right?)"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_a_broken_link_and_skips_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("See [a](missing.md) and [b](https://x.org).\n```\n[c](in_code.md)\n```\n`[d](inline.md)`\n", encoding="utf-8")
    assert relative_links(page) == ["missing.md"]
    assert _slug("Test-time CaT: `catrl eval`") == "test-time-cat-catrl-eval"


def test_the_readme_stays_two_screens_and_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    assert lines[0] == "```bash" and lines[3] == "```"
    assert lines[1].endswith("catrl eval --dataset gsm8k --limit 4 -g 4 --max-tokens 384")
    assert lines[2].endswith(".venv/bin/python -m pytest")


def _commands(cmd, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI, groups included: (), ("eval",), ("models",), ("models", "list"), ...
    (typer vendors its own click, so a group is whatever has subcommands)."""
    out = [path]
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        out += _commands(sub, (*path, name))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_cli_walk_finds_every_command():
    assert {("eval",), ("answer",), ("label",), ("generate",), ("train",), ("audit",), ("sft",), ("serve",),
            ("models", "pull"), ("cache", "export")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "catrl")
def test_every_command_help_names_an_existing_guide_page(path):
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    pages = GUIDE.findall(res.output)
    assert pages, f"catrl {' '.join(path)} --help names no guide page:\n{res.output}"
    assert all((ROOT / p).is_file() for p in pages), pages
