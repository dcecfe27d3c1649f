"""How the C allocator (glibc malloc) treats the buffers a record passes through.

Every record allocates and frees a few buffers of 240 kB to a few MB (the file read, the float64
conversion, the float32 result, the copy out of the shared slot, the Arrow batch of 32 records).
glibc serves allocations above its mmap threshold (128 kB, raised only as far as the largest block
freed so far) with a fresh `mmap` and gives freed memory back to the kernel once 128 kB-256 kB lie
free at the top of the heap, so each such buffer costs a page fault per 4 kB page, every time:
measured in a decoder child, 60 faults for a 240 kB file and 0.64 of its 1.12 ms per record in
system time. With the thresholds below those buffers come from memory the process already holds
(docs/performance.md, "Issue #15"). Only the cost changes: what is computed and written is the same.

glibc reads the settings from the environment at start-up (`ALLOCATOR_ENV`, for child processes)
or takes them from `mallopt` in a running process (`keep_freed_memory`); another C library ignores
both.
"""
from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD_BYTES = 8 << 20
"""Blocks below this come from the heap, not from a fresh mapping: a whole Arrow batch of 32 default
records (7.7 MB) included. Larger ones (a long record decoded whole) are mapped as before."""

TRIM_THRESHOLD_BYTES = 32 << 20
"""Free memory at the top of the heap kept for the next records instead of being returned at once."""

ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
                 "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}
"""The same settings for a process about to start (glibc's tunables, read once at start-up)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Applies the thresholds to this process (glibc); False where the C library has no `mallopt`.
    Called by a command before it loads its libraries, so the buffers they allocate per record follow it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
