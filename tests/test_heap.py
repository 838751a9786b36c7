"""catrl.heap: freed training memory stays in the process, so later steps fault (almost) nothing in."""

import os
import subprocess
import sys

import pytest

from catrl import heap

# a step's shape in miniature: a matmul, a log-softmax over a wide last axis, a backward pass, repeated
PROBE = """
import resource
from catrl.heap import keep_freed_memory
kept = keep_freed_memory()
import torch
torch.manual_seed(0)
x, w = torch.randn(1024, 2048, requires_grad=True), torch.randn(2048, 8192, requires_grad=True)
def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.log_softmax(x @ w, -1).mean().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [step() for _ in range(8)]
print(kept, sum(faults[4:]))
"""


def _probe(env_heap: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "CATRL_HEAP"}
    if env_heap:
        env["CATRL_HEAP"] = env_heap
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not heap.is_glibc(), reason="mallopt is glibc's")
def test_later_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    kept, faults = _probe(None)
    system, system_faults = _probe("system")
    assert (kept, system) == ("True", "False")
    if system_faults < 10_000:  # transparent huge pages set to `always`: 2 MB faults, little for the heap to save
        assert faults <= system_faults
    else:  # 4 KB pages: each step maps its 32 MB logits and their gradient afresh
        assert faults < system_faults / 4
