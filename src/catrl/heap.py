"""Keep freed memory in the process for the next training step instead of handing it back to the kernel.

A CPU GRPO step allocates and frees the same large tensors every micro-batch: logits of 4 x 320 x 151,936
values (390 MB in bf16), activations, their gradients. glibc serves a block above its mmap threshold (at
most 32 MB) with a fresh mmap and unmaps it on free, and trims the heap's free top, so every micro-batch
faults its memory in again page by page and the kernel zeroes it. On this project's 2-core CPU a step of
the controls' config spent 34-40 s of system time on that; with mmap off and no trimming, under a second
after the first steps, and the median step went from 129.0 to 108.0 s (docs/bench/grpo_step.txt, runs 7
and 8). Only where memory comes from changes: no number is computed differently.

The cost: the process keeps its peak heap until it exits, as a caching allocator does (peak RSS 14.3 GB
against 11.0 GB in those runs). `CATRL_HEAP=system` leaves glibc's defaults alone. Elsewhere than glibc
(macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h


_kept = False


def is_glibc() -> bool:
    try:
        return platform.system() == "Linux" and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError):
        return False


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory() -> bool:
    """Turn glibc's mmap for large blocks and heap trimming off for the rest of the process. True when set.
    Blocks a thread other than the main one allocates above 64 MB are still mapped afresh (glibc's thread heaps
    are 64 MB at most); TRL's loss and backward pass run on the main thread."""
    global _kept
    if os.environ.get("CATRL_HEAP", "keep") == "system" or not is_glibc():
        return False
    try:
        libc = _libc()
        # -1 is SIZE_MAX to mallopt's size_t setting: the free top is never trimmed
        _kept = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    except (OSError, AttributeError):
        _kept = False
    if not _kept:
        log.info("could not tune glibc's malloc; training runs with its defaults")
    return _kept


def kept() -> bool:
    """Whether keep_freed_memory took effect in this process."""
    return _kept


def release_setup_memory() -> None:
    """Hand back what loading left free (conversion buffers, a model's staging copy) once, before the steps: the
    heap then keeps only what the steps themselves reuse."""
    if _kept:
        _libc().malloc_trim(0)
