"""A CaT-RL run's portable state: everything a resume needs, small enough to commit (at most 15 MB).

A checkpoint of the Trainer holds the LoRA adapter, the optimizer and scheduler, the RNG states and
trainer_state.json (step, data order via the seed), plus files a resume does not need (the tokenizer,
the training arguments). With a small LoRA rank the needed part is a few MB (r=1 on every linear layer
of the 0.5B policy: 2.2 MB adapter + 4.4 MB Adam moments), so a run can live in git and move with the
repository: after every checkpoint, `save_state` copies the needed files and the run's trail
(metrics.jsonl, starts.jsonl, audit.jsonl gzipped) into `state_dir`, with a manifest (state.json) of
the step, the config the run was started with, and a SHA-256 per file. `restore_state` checks all of
that before it writes anything, then lays the state out as `checkpoint-N/` in the run directory,
where the Trainer resumes from it as from its own checkpoint.

Writes are whole or not at all: the new state goes to `STATE.tmp`, the old one moves to `STATE.old`,
the new one takes its place, the old one goes. A kill between the two renames leaves `STATE.old`,
which `read_manifest` falls back to. Only the latest state of a run is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from catrl.errors import InputError

log = logging.getLogger(__name__)

CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
TRAIL_FILES = ("metrics.jsonl", "starts.jsonl")  # copied as they are; audit.jsonl travels gzipped
MANIFEST = "state.json"
LIMIT_BYTES = 15 * 2**20
FORMAT = 1
RUNTIME_FIELDS = frozenset({"output_dir", "state_dir", "max_minutes", "threads", "anchor_base_url", "judge_base_url", "anchor_timeout_s"})
"""Config fields a resume may change: where things go, how long this session may run, and where the
same frozen anchor is served. Any other difference would make the resumed run a different run."""


def config_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The fields (outside RUNTIME_FIELDS) whose values differ, as `field: before -> now`. A field only one
    side has is one a catrl version did not know yet: it counts as its default there (the behaviour that
    version had), and a field this version does not know either is not compared."""
    defaults = _config_defaults()
    keys = sorted(((set(before) & set(now)) | ((set(before) ^ set(now)) & set(defaults))) - RUNTIME_FIELDS)
    get = lambda d, k: d[k] if k in d else defaults[k]  # noqa: E731
    return [f"{k}: {get(before, k)!r} -> {get(now, k)!r}" for k in keys if get(before, k) != get(now, k)]


def _config_defaults() -> dict[str, Any]:
    import dataclasses

    from catrl.train_config import TrainConfig

    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def check_same_config(before: dict[str, Any], now: dict[str, Any], where: str) -> None:
    if diff := config_differences(before, now):
        raise InputError(f"{where} was made with another config; the fields that differ (saved -> this run): {'; '.join(diff)}. "
                         "Resume with the saved config, or start a new run in another output_dir/state_dir.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_files(ckpt_src: Path, trail_src: Path, ckpt_dst: Path, trail_dst: Path) -> None:
    """The checkpoint's files into a fresh `ckpt_dst`, and the plain trail files that exist into `trail_dst`."""
    shutil.rmtree(ckpt_dst, ignore_errors=True)
    ckpt_dst.mkdir(parents=True)
    for f in CHECKPOINT_FILES:
        shutil.copyfile(ckpt_src / f, ckpt_dst / f)
    for f in TRAIL_FILES:
        if (trail_src / f).is_file():
            shutil.copyfile(trail_src / f, trail_dst / f)


def save_state(ckpt: Path, run_dir: Path, state_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Copy checkpoint `ckpt`'s resumable files and the run's trail into `state_dir`; returns the manifest."""
    missing = [f for f in CHECKPOINT_FILES if not (ckpt / f).is_file()]
    if missing:
        raise InputError(f"{ckpt}: no {', '.join(missing)}: a portable state needs a LoRA checkpoint (lora_r > 0)")
    state_dir = Path(state_dir)
    tmp, old = state_dir.with_name(state_dir.name + ".tmp"), state_dir.with_name(state_dir.name + ".old")
    copy_files(ckpt, run_dir, tmp, tmp)
    if (run_dir / "audit.jsonl").is_file():
        with open(run_dir / "audit.jsonl", "rb") as src, open(tmp / "audit.jsonl.gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
    step = int(json.loads((ckpt / "trainer_state.json").read_text())["global_step"])
    files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
    manifest = {"format": FORMAT, "step": step, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "bytes": sum(v["bytes"] for v in files.values()), "config": config, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if manifest["bytes"] > LIMIT_BYTES:
        log.warning("%s: the state is %.1f MB, over the %d MB a committed state may take; lower lora_r or narrow lora_targets",
                    state_dir, manifest["bytes"] / 2**20, LIMIT_BYTES // 2**20)
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        state_dir.rename(old)
    tmp.rename(state_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def read_manifest(state_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The state's directory and manifest, or None when there is no state. A kill mid-swap leaves
    STATE.old: that is the state then. A manifest that does not parse is an InputError."""
    state_dir = Path(state_dir)
    for d in (state_dir, state_dir.with_name(state_dir.name + ".old")):
        path = d / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
                int(manifest["step"]), dict(manifest["files"]), dict(manifest["config"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{path}: not a readable run state ({type(e).__name__}: {e}); restore it from git or delete the directory") from None
            if manifest.get("format") != FORMAT:
                raise InputError(f"{path}: state format {manifest.get('format')!r}, this catrl reads {FORMAT}")
            return d, manifest
    return None


def verify_state(d: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest names is there, whole (size and SHA-256), and the checkpoint's files are all named."""
    missing = [f for f in CHECKPOINT_FILES if f not in manifest["files"]]
    if missing:
        raise InputError(f"{d / MANIFEST}: the state lacks {', '.join(missing)}")
    for name, meta in manifest["files"].items():
        path = d / name
        if not path.is_file():
            raise InputError(f"{path}: missing (the state names it); restore the directory from git")
        if path.stat().st_size != meta.get("bytes") or _sha256(path) != meta.get("sha256"):
            raise InputError(f"{path}: corrupted or truncated ({path.stat().st_size} bytes, the manifest says {meta.get('bytes')}; "
                             "the SHA-256 differs); restore it from git. Nothing was overwritten.")


def restore_state(state_dir: Path, run_dir: Path, config: dict[str, Any]) -> Path | None:
    """Lay the state out as `run_dir/checkpoint-N/` with the run's trail beside it, after checking the
    config and every file; returns the checkpoint, or None when there is no state. Nothing is written
    unless all checks pass."""
    found = read_manifest(state_dir)
    if found is None:
        return None
    d, manifest = found
    check_same_config(manifest["config"], config, f"the run state {d}")
    verify_state(d, manifest)
    ckpt = Path(run_dir) / f"checkpoint-{manifest['step']}"
    tmp = ckpt.with_name(ckpt.name + ".restoring")
    copy_files(d, d, tmp, Path(run_dir))
    if (d / "audit.jsonl.gz").is_file():
        with gzip.open(d / "audit.jsonl.gz", "rb") as src, open(Path(run_dir) / "audit.jsonl", "wb") as dst:
            shutil.copyfileobj(src, dst)
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)
    return ckpt


def state_step(state_dir: Path | None) -> int | None:
    """The step a state holds, or None when there is none."""
    found = read_manifest(state_dir) if state_dir else None
    return int(found[1]["step"]) if found else None
