"""Large CPU buffers reused instead of mapped anew, for the length of an episode. Private to
``esper_ab.episodes``.

glibc serves an allocation above its mmap threshold with a fresh ``mmap`` and returns it with
``munmap`` when it is freed (its dynamic threshold stops at 32 MiB, and the heap's free top is
trimmed back above twice that); the next allocation is zero-filled by the kernel page by page
on first touch. A batched value fork's block-1 activation is 7.3 MB (28 forks x 8 channels x
16 x 16 x batch 32, float32), allocated and freed several times per step. Measured on the CNN
flagship's episode (replicate 1, one thread, 2 cores at load ~6): 0.7-1.3 million minor page
faults and 2.3-3.5 s of system CPU time per episode; with the thresholds raised, 0.1 million
and 0.5-0.6 s, user time unchanged, the tables bit-identical (docs/PERFORMANCE.md).

The setting is the process's (glibc has no per-thread one) and stays raised after the
episode, as glibc's own dynamic threshold would after its first large free; the heap's free
top is trimmed back to the system when the episode ends. Elsewhere than glibc this does
nothing. Allocation addresses do not change results: torch aligns every CPU buffer to 64
bytes either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# far above any tensor an episode allocates per step on the CPU (the largest is ~15 MB)
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 512 << 20


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt, libc.malloc_trim   # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def raise_thresholds() -> bool:
    """Keep freed large blocks in the heap from now on; False where this is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@contextmanager
def reused_buffers() -> Iterator[bool]:
    """Raise the thresholds for a block of CPU training; trim the heap afterwards."""
    applied = raise_thresholds()
    try:
        yield applied
    finally:
        if applied:
            _libc().malloc_trim(0)
