"""bf16 against fp32 for the transformers policy on this CPU: one linear layer of Qwen2.5-0.5B's MLP
(896 -> 4864) at decode (16 rows) and prefill (512 rows) shapes, each timed for 2 s in one run.
Why `dtype: auto` picks fp32 on a CPU without bf16 instructions (catrl.precision).

    python bench/precision.py
"""

from __future__ import annotations

import os
import platform
import time

import torch

from catrl.precision import cpu_flags, resolve_dtype

SHAPES = {"decode (16 rows)": 16, "prefill (512 rows)": 512}


def seconds_per_call(rows: int, dtype: torch.dtype, budget_s: float = 2.0) -> float:
    x, w = torch.randn(rows, 896, dtype=dtype), torch.randn(4864, 896, dtype=dtype)
    torch.nn.functional.linear(x, w)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        torch.nn.functional.linear(x, w)
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    torch.manual_seed(0)
    native = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}) or ["none"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads; bf16 instructions: {', '.join(native)}; dtype auto -> {resolve_dtype('auto')}")
    print(f"{'shape (x 896 @ 896 x 4864)':<28}{'fp32 ms':>10}{'bf16 ms':>10}{'bf16/fp32':>11}")
    ratios = {}
    for name, rows in SHAPES.items():
        f, b = seconds_per_call(rows, torch.float32), seconds_per_call(rows, torch.bfloat16)
        ratios[name] = b / f
        print(f"{name:<28}{f * 1e3:>10.2f}{b * 1e3:>10.2f}{b / f:>10.2f}x")
    print(f"precision: bf16_over_fp32_prefill={ratios['prefill (512 rows)']:.2f} bf16_over_fp32_decode={ratios['decode (16 rows)']:.2f}")


if __name__ == "__main__":
    main()
