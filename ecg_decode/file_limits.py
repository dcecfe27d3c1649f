"""How much of an input file anyone reads: the same limits whether the Beam worker reads a file (remote
storage) or the decoder child does (local files, `sandbox/child.py`)."""
from __future__ import annotations

import os
from typing import BinaryIO

MAX_FILE_BYTES = 256 * 2**20
"""Files larger than this are refused unread: a 10 s, 12-lead ECG is well under 1 MB."""

MAX_HEADER_BYTES = 1 << 20
"""A WFDB header is a few hundred bytes (one line per lead); a larger `.hea` is refused unread."""


class TooLarge(Exception):
    """The file holds more than the limit (it may have grown since it was listed)."""


def read_at_most(handle: BinaryIO, limit: int, name: str) -> bytes:
    """The whole file, reading at most `limit` + 1 bytes, so no file can make the reader hold more.

    The first read asks for the size the file has now (plus one byte, to see whether it grew since):
    a read of `limit` + 1 bytes makes Python allocate that much up front, a fresh 256 MB mapping for a
    240 kB file, whose pages then fault in one by one on every record (measured: 0.2 of 0.3 ms per
    read). A file that grew is read on, still within the limit."""
    asked = min(_size_now(handle), limit) + 1
    data = handle.read(asked)
    if asked <= limit and len(data) == asked:  # it grew (or its size is unknown): read on, within the limit
        data += handle.read(limit + 1 - asked)
    if len(data) > limit:
        raise TooLarge(f"{name} holds more than {limit} bytes")
    return data


def _size_now(handle: BinaryIO) -> int:
    """The file's size now (0 for a stream that has none: it is then read in one go, as before)."""
    try:
        return max(os.fstat(handle.fileno()).st_size - handle.tell(), 0)
    except (OSError, AttributeError, ValueError):  # no descriptor (an object store's stream, BytesIO)
        return 0
