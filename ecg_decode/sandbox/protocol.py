"""The wire between the parent and the decoder child: frames, limits, request kinds, result slots.

Length-prefixed frames of JSON metadata plus raw bytes, in both directions. Nothing is pickled, so
neither side can make the other run code. Both sides import this module; nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import math
import mmap
import struct

import numpy as np

from ecg_common.schema import MAX_RESULT_VALUES

DEFAULT_TIMEOUT_S = 60.0
"""Per-file wall-clock limit. Decoding a real record takes milliseconds and the slowest legitimate
case measured (a one-hour record, or a 31 kHz one resampled) well under a second."""

DEFAULT_MEMORY_MB = 1024
"""Address space one decode may add to the child's own. The largest accepted record (one hour,
float64, `container.MAX_ELEMENTS`) is 173 MB; parsing it needs a few copies of that."""

STARTUP_TIMEOUT_S = 120.0
"""How long a new child may take to import numpy, scipy and h5py before the environment is deemed broken."""

FRAME = struct.Struct("<IQ")  # metadata length, payload length
MAX_METADATA_BYTES = 1 << 20
RESULT_DTYPE = np.dtype("<f4")
RESULT_BYTES = 2 << 20
"""Capacity of one shared result slot (2 MiB): one default window is 240 kB, a whole 40 s record of 12
leads at 500 Hz 960 kB. A larger result (a long record decoded whole, for windows) travels in the
response's payload instead, up to MAX_RESULT_BYTES."""
MAX_RESULT_BYTES = MAX_RESULT_VALUES * RESULT_DTYPE.itemsize
"""The largest result a child may send (`schema.MAX_RESULT_VALUES`); more is not our protocol."""
MMAP_THRESHOLD_BYTES = 8 << 20
"""glibc's mmap threshold in a child: blocks below it (every buffer of a default record) come from its heap."""
TRIM_THRESHOLD_BYTES = 32 << 20
"""Free memory at the top of a child's heap that glibc keeps for the next records instead of returning it."""
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
                 "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}
"""Each record allocates and frees buffers of 240 kB to a few hundred kB (the float64 conversion, the
float32 result, loadmat's arrays). With glibc's defaults (a 128 kB mmap threshold that adapts, a
128 kB trim threshold) those went back to the kernel and came again as fresh mappings, a page fault
per 4 kB page on every record: 261 faults a record, 0.64 of a child's 1.12 ms per record in system
time (measured). glibc reads these at the child's start; another C library ignores them. Only the
cost changes: what is decoded is the same, and the address-space limit (`--decode_memory_mb`) still
counts every byte (docs/performance.md, "Issue #15")."""
CHILD_ENV = {**{name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
             "HDF5_PLUGIN_PRELOAD": "::", **ALLOCATOR_ENV}
"""The decoder needs no BLAS threads (each would also reserve address space under the limit), and
`::` tells libhdf5 never to load a filter plugin, so a file naming one cannot load a shared library.
`ALLOCATOR_ENV`: each record's buffers are reused for the next."""


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """What one file's decoding may cost before it is rejected (`timeout`, `too_large`)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB


class ChildGone(Exception):
    """The child closed its pipe or died."""


class Timeout(Exception):
    """The child did not answer within the limit."""


def pack(metadata: dict, payload: bytes | memoryview = b"") -> list[bytes | memoryview]:
    meta = json.dumps(metadata).encode("utf-8")
    return [FRAME.pack(len(meta), len(payload)), meta, payload]


def parse_metadata(raw: bytes) -> dict:
    metadata = json.loads(raw.decode("utf-8"))
    if not isinstance(metadata, dict):
        raise ValueError("frame metadata is not a JSON object")
    return metadata


def fits_in_slot(shape: tuple[int, ...]) -> bool:
    return math.prod(shape) * RESULT_DTYPE.itemsize <= RESULT_BYTES


def slot_view(slots: mmap.mmap, slot: int, shape: tuple[int, int]) -> np.ndarray:
    """Slot `slot` of the shared result memory, as the (samples, leads) float32 array it holds
    (`shape` must fit in a slot: `fits_in_slot`)."""
    return np.frombuffer(slots, dtype=RESULT_DTYPE, count=math.prod(shape),
                         offset=slot * RESULT_BYTES).reshape(shape)


@dataclasses.dataclass(frozen=True)
class LocalFile:
    """A file on this machine's file system, which the child reads itself (within the given limits)
    instead of the parent reading it and copying its bytes through the pipe. `root` is the input
    directory both files must still be under when the child opens them (`inputs/opening.py`);
    without one, the file's own folder."""

    path: str
    header_path: str | None
    max_bytes: int
    max_header_bytes: int
    root: str | None = None


@dataclasses.dataclass(frozen=True)
class WfdbBytes:
    """A WFDB record's signal files, read by the parent (remote storage) and sent in the request's
    payload one after the other; the header travels as the request's header text."""

    files: dict[str, bytes]

    def payload(self) -> bytes:
        return b"".join(self.files.values())

    def manifest(self) -> list[list]:
        return [[name, len(data)] for name, data in self.files.items()]
