"""The float type of the in-process (transformers) policy: `auto` picks bf16 only where the hardware
computes in it. bf16 halves memory, but on a CPU without bf16 instructions (AVX512-BF16 or AMX)
torch converts every operand: on an AVX2-only EPYC a 512-row matmul ran 5.9x slower than in fp32, a
16-row (decode) one 2.2x (docs/bench/precision.txt); there `auto` means fp32."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from catrl.errors import InputError

DTYPES = ("auto", "bf16", "fp32")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@cache
def native_bf16() -> bool:
    """True on a CUDA GPU, or on a CPU with bf16 arithmetic."""
    import torch

    return torch.cuda.is_available() or bool(cpu_flags() & NATIVE_BF16_FLAGS)


def resolve_dtype(name: str) -> str:
    """'auto' -> 'bf16' or 'fp32' for this machine; 'bf16' and 'fp32' as given."""
    if name not in DTYPES:
        raise InputError(f"dtype {name!r}: must be one of {', '.join(DTYPES)}")
    if name == "auto":
        return "bf16" if native_bf16() else "fp32"
    return name


def torch_dtype(name: str):
    import torch

    return torch.bfloat16 if resolve_dtype(name) == "bf16" else torch.float32
