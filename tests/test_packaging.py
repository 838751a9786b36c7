"""What pyproject.toml asks pip for exists: every extra we request is one the package provides, so
a fresh install prints no 'does not provide the extra' warning of ours."""

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
REQS = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]] + [
    Requirement(r) for group in PYPROJECT["project"].get("optional-dependencies", {}).values() for r in group
    if not r.startswith("catrl")]


@pytest.mark.parametrize("req", [r for r in REQS if r.extras], ids=str)
def test_every_requested_extra_exists(req):
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{req.name} is not installed here")
    provided = set(dist.metadata.get_all("Provides-Extra") or [])
    missing = {e for e in req.extras if e not in provided}  # as written: pip warned on antlr4_13_2 against antlr4-13-2
    assert not missing, f"{req.name} provides no extra {missing}; it provides {sorted(provided)}"


def test_math_verify_is_pinned_with_its_parser():
    names = {canonicalize_name(r.name): r for r in REQS}
    assert str(names["math-verify"].specifier) == "==0.9.0" and "antlr4-python3-runtime" in names
