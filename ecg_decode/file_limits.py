"""How much of an input file anyone reads: the same limits whether the Beam worker reads a file (remote
storage) or the decoder child does (local files, `sandbox/child.py`)."""
from __future__ import annotations

from typing import BinaryIO

MAX_FILE_BYTES = 256 * 2**20
"""Files larger than this are refused unread: a 10 s, 12-lead ECG is well under 1 MB."""

MAX_HEADER_BYTES = 1 << 20
"""A WFDB header is a few hundred bytes (one line per lead); a larger `.hea` is refused unread."""


class TooLarge(Exception):
    """The file holds more than the limit (it may have grown since it was listed)."""


def read_at_most(handle: BinaryIO, limit: int, name: str) -> bytes:
    """The whole file, reading at most `limit` + 1 bytes, so no file can make the reader hold more."""
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{name} holds more than {limit} bytes")
    return data
