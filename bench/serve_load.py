"""Load on the HTTP reward service versus direct library calls, in one run on loopback.

1. Direct: CaTReward.score_groups on batches of N groups with the embedded anchor in this process
   (the engine's own latency for the work one service batch holds).
2. Load: `catrl serve` as a real process with the same anchor; N closed-loop clients each POST one
   group (unique rollouts, so no cache hits) for --seconds; p50/p99 latency, throughput, and a
   check that every request got exactly one answer.
3. Overload: a burst of 4 x --max-queue single-group requests at once; the excess must get 503 with
   Retry-After and the service must stay healthy.

Ends with `serve_load: p99_ratio=<service p99 / direct median for a batch of N>`.

    python bench/serve_load.py [--clients 8] [--seconds 60] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import httpx
import numpy as np

from catrl.engines.llamacpp import LlamaCppEngine
from catrl.rewards import CaTReward
from catrl.types import Sampling


def group(tag: str) -> list[str]:
    return [f"Step 1: {tag} gives 6*7. So the answer is \\boxed{{42}}", f"({tag}) I get \\boxed{{42}}", f"[{tag}] \\boxed{{41}}"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-queue", type=int, default=32)
    ap.add_argument("--direct-reps", type=int, default=5)
    args = ap.parse_args()
    n, sampling = args.clients, Sampling(max_tokens=args.max_tokens)

    engine = LlamaCppEngine(args.model, max_seqs=n, n_ctx_seq=1024)
    reward = CaTReward(engine, sampling=sampling)
    reward.score_groups([None] * n, [group(f"warm{i}") for i in range(n)])
    direct = []
    for rep in range(args.direct_reps):
        t0 = time.perf_counter()
        reward.score_groups([None] * n, [group(f"d{rep}-{i}") for i in range(n)])
        direct.append(time.perf_counter() - t0)
    engine.close()
    direct_med = statistics.median(direct)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as cache:
        proc = subprocess.Popen(
            [sys.executable, "-m", "catrl", "serve", "--model", args.model, "--port", str(port), "--anchor-max-tokens",
             str(args.max_tokens), "--max-seqs", str(n), "--ctx", "1024", "--max-batch", str(n), "--max-queue", str(args.max_queue),
             "--batch-window-ms", "20"],
            env={**os.environ, "CATRL_CACHE_DIR": cache}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise SystemExit(proc.stderr.read().decode()[-2000:])
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not come up")
                time.sleep(0.5)
            httpx.post(f"{url}/v1/rewards", json={"groups": [{"rollouts": group("warm")}]}, timeout=120)

            lat, codes, sent, answered = [], [], [], []
            lock = threading.Lock()
            stop = time.monotonic() + args.seconds

            def client(k: int) -> None:
                with httpx.Client(timeout=300) as c:
                    while time.monotonic() < stop:
                        tag = uuid.uuid4().hex[:8]
                        with lock:
                            sent.append(tag)
                        t0 = time.perf_counter()
                        r = c.post(f"{url}/v1/rewards", json={"groups": [{"rollouts": group(tag)}]})
                        dt = time.perf_counter() - t0
                        with lock:
                            codes.append(r.status_code)
                            if r.status_code == 200:
                                lat.append(dt)
                                answered.append((tag, len(r.json()["results"])))

            t_start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t_start

            burst = 4 * args.max_queue
            burst_codes, retry_after = [], set()

            def one_burst(i: int) -> None:
                r = httpx.post(f"{url}/v1/rewards", json={"groups": [{"rollouts": group(f"b{i}")}]}, timeout=600)
                with lock:
                    burst_codes.append(r.status_code)
                    if r.status_code == 503:
                        retry_after.add(r.headers.get("retry-after"))

            bt = [threading.Thread(target=one_burst, args=(i,)) for i in range(burst)]
            for t in bt:
                t.start()
            for t in bt:
                t.join()
            health = httpx.get(f"{url}/health", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99))
    once = len(answered) == len(lat) and len({t for t, _ in answered}) == len(answered) and all(k == 1 for _, k in answered)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; anchor {args.model} (llama.cpp, max {args.max_tokens} tokens), "
          f"G=3 rollouts per group, {n} clients x 1 group, {args.seconds:.0f} s")
    print(f"direct score_groups, batch of {n} groups: median {direct_med:.2f} s (runs: {', '.join(f'{d:.2f}' for d in direct)})")
    print(f"service: {len(lat)} answered of {len(sent)} sent ({codes.count(200)} x 200, others {sorted(set(codes) - {200}) or 'none'}), "
          f"p50 {p50:.2f} s, p99 {p99:.2f} s, {len(lat) / wall:.2f} groups/s vs direct {n / direct_med:.2f} groups/s; "
          f"every request answered exactly once: {once}")
    print(f"overload: burst of {burst} with max-queue {args.max_queue}: {burst_codes.count(200)} x 200, {burst_codes.count(503)} x 503 "
          f"(Retry-After {sorted(retry_after)}), other {sorted(set(burst_codes) - {200, 503}) or 'none'}; health after: {health['status']}")
    print(f"serve_load: p99_ratio={p99 / direct_med:.2f}")


if __name__ == "__main__":
    main()
