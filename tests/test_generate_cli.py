"""`catrl generate` end to end on the smallest real model, including a SIGKILL midway."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

ROWS = 10


def _cmd(tmp_path, out, cache, *extra):
    return [
        sys.executable, "-m", "catrl.cli", "generate", "gsm8k", "--limit", str(ROWS), "-n", "3", "--max-tokens", "48",
        "--model", "smollm2-135m", "--max-seqs", "6", "--ctx", "1024", "-o", str(out), "--cache", str(cache), *extra,
    ]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _calls_made(stdout: str) -> int:
    line = next(x for x in stdout.splitlines() if x.startswith("calls: made="))
    return int(line.split("made=")[1].split()[0])


def _cached(cache) -> int:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT COUNT(*) FROM calls WHERE kind='generate'").fetchone()[0]


@pytest.mark.real_model
def test_sigkill_midway_then_rerun_matches_uninterrupted_run(tmp_path, smol_path):
    ref_out, ref_cache = tmp_path / "ref.jsonl", tmp_path / "ref.sqlite"
    r = _run(_cmd(tmp_path, ref_out, ref_cache))
    assert r.returncode == 0, r.stderr
    assert _calls_made(r.stdout) == ROWS
    reference = ref_out.read_text()
    assert len(reference.splitlines()) == ROWS

    out, cache = tmp_path / "run.jsonl", tmp_path / "run.sqlite"
    proc = subprocess.Popen(_cmd(tmp_path, out, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len([x for x in out.read_bytes().split(b"\n") if x.strip()])
    assert 3 <= written < ROWS, "the kill must land midway"
    finished = _cached(cache)
    assert finished >= written - 1  # a torn last line is possible; a finished call is never lost

    r2 = _run(_cmd(tmp_path, out, cache))
    assert r2.returncode == 0, r2.stderr
    assert _calls_made(r2.stdout) == ROWS - finished  # exactly the missing calls
    assert out.read_text() == reference


@pytest.mark.real_model
def test_rerun_of_a_finished_run_makes_no_calls(tmp_path, smol_path):
    out, cache = tmp_path / "o.jsonl", tmp_path / "c.sqlite"
    assert _run(_cmd(tmp_path, out, cache)).returncode == 0
    first = out.read_text()
    out.unlink()
    r = _run(_cmd(tmp_path, out, cache))
    assert r.returncode == 0 and _calls_made(r.stdout) == 0 and out.read_text() == first
    rec = json.loads(first.splitlines()[0])
    assert rec["id"] == "0" and len(rec["samples"]) == 3 and rec["engine"].startswith("llamacpp:")


def test_bad_input_gives_a_clear_error_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\nnot json\n')
    r = _run([sys.executable, "-m", "catrl.cli", "generate", str(bad), "-o", str(tmp_path / "o.jsonl"), "--no-cache"])
    assert r.returncode == 2
    assert "bad.jsonl:2" in r.stderr and "Traceback" not in r.stderr
    r = _run([sys.executable, "-m", "catrl.cli", "generate", "gsm8k", "--field", "question=problem", "--limit", "1", "--no-cache"])
    assert r.returncode == 2 and "'problem'" in r.stderr and "--field question=" in r.stderr


def test_help_explains_each_subcommand():
    r = _run([sys.executable, "-m", "catrl.cli", "--help"], env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    for cmd in ("generate", "models"):
        assert cmd in r.stdout
    r = _run([sys.executable, "-m", "catrl.cli", "models", "--help"], env={**os.environ, "COLUMNS": "200"})
    assert all(c in r.stdout for c in ("list", "pull", "path"))
