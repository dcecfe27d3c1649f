"""What reprocessing remembers of an input file, and how one file and one record are compared with it.

These are the rules of the ledger (`runs/ledger.py`) applied to one file or one record at a time, so
they run where the files are: on the workers of the reprocessing job (`graph/selection.py`), each file
compared with its own ledger line and hashed there, never all of them in the launcher.

A file is new when the ledger has no line for it, changed when its size or content differs. A file
whose size and modification time both match its line is taken as unchanged without reading it; one
whose time moved but whose content did not (touched, copied with a new time) is not reprocessed
either. The content is the SHA-256 of the bytes, read under the decoder's rules (`opening.py`: a local
file only if it resolves to a regular file inside INCOMING, no file beyond MAX_HASH_BYTES or
HASH_TIMEOUT_S); on an object store that keeps a checksum of each object (GCS: crc32c) it is that
checksum, from the object's metadata, prefixed with STORE_CHECKSUM_PREFIX, so nothing is read. A file
refused unread is recorded with NOT_HASHED: it counts as changed whenever its size or time moves, and
decoding rejects it with its reason.

A record is new or changed when any file it is decoded from is (its `.mat` and `.hea`, or a WFDB
record's `.hea` and the signal files it names), and is left for a later run while any of them was
modified too recently (maybe still being uploaded).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import BinaryIO

from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.inputs.record_files import signal_files_of
from ecg_common.rejections import Reason
from ecg_decode.file_limits import MAX_FILE_BYTES
from ecg_decode.opening import Refused, open_local

_HASH_CHUNK_BYTES = 4 * 2**20
MAX_HASH_BYTES = MAX_FILE_BYTES
"""No file larger than decoding accepts is hashed whole: it would only be rejected as `too_large`."""
HASH_TIMEOUT_S = 300.0
"""Wall-clock bound on hashing one file (checked between chunks): reading MAX_HASH_BYTES from a local
disk takes about a second, so only a stalling remote store or mount comes near it."""
NOT_HASHED = ""
"""The `sha256` of a file that was refused unread (see the module docstring)."""
STORE_CHECKSUM_PREFIX = "store-checksum:"
"""Marks a `sha256` field that holds the object store's own checksum of the object, not a SHA-256 of its
bytes; the two never compare equal, so a file's first run after a change of method counts it changed."""
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FileState:
    """What the ledger remembers of one input file; `batch` is empty until the file is published."""

    path: str
    size: int
    mtime: float
    sha256: str
    batch: str = ""
    signal_files: tuple[str, ...] | None = None
    """A WFDB record's `.hea`: the paths of the signal files it names; None for any other file (and
    for a header whose line was written before they were recorded)."""

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        if self.signal_files is None:  # every other line stays as it always was
            del fields["signal_files"]
        else:
            fields["signal_files"] = list(self.signal_files)
        return json.dumps(fields)

    @classmethod
    def from_json(cls, row: dict) -> FileState:
        files = row.get("signal_files")
        return cls(**{**row, "signal_files": None if files is None else tuple(files)})


class Seen(enum.Enum):
    """A listed file against its ledger line."""

    UNCHANGED = "unchanged"
    TOUCHED = "touched"
    """Same size and content under a new modification time: recorded so the next run does not hash it again."""
    CHANGED = "changed"
    """New, or its size or content differs (or it could not be hashed)."""
    UNSETTLED = "unsettled"
    """Modified too recently: not looked at, left for a later run."""


@dataclasses.dataclass(frozen=True)
class FileScan:
    """One listed file as compared with the ledger: what was seen, its current state (None when
    unsettled) and whether the ledger had a line for it."""

    path: str
    seen: Seen
    state: FileState | None
    in_ledger: bool


def content_id(path: str, root: str | None = None, limit: int = MAX_HASH_BYTES,
               timeout_s: float = HASH_TIMEOUT_S) -> str:
    """What identifies the file's content: the object store's checksum where it keeps one (no read),
    else the SHA-256 of its bytes (`sha256_of`)."""
    if not is_local(path):
        try:
            checksum = FileSystems.checksum(path)
        except (BeamIOError, NotImplementedError):
            checksum = None
        if checksum:
            return f"{STORE_CHECKSUM_PREFIX}{checksum}"
    return sha256_of(path, root, limit, timeout_s)


def sha256_of(path: str, root: str | None = None, limit: int = MAX_HASH_BYTES,
              timeout_s: float = HASH_TIMEOUT_S) -> str:
    """The content hash, streamed in chunks (a local file through `opening.open_local`, staying under
    `root`; an object through `FileSystems`), or NOT_HASHED when the file must not be read, holds
    more than `limit` bytes or takes longer than `timeout_s`."""
    try:
        with _open_for_hashing(path, root, limit) as handle:
            return _digest(handle, limit, timeout_s)
    except Refused as refused:
        _log.info("%s not hashed: %s", path, refused.detail)
        return NOT_HASHED


def _open_for_hashing(path: str, root: str | None, limit: int) -> AbstractContextManager[BinaryIO]:
    if is_local(path):
        return open_local(path, limit, root)
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _digest(handle: BinaryIO, limit: int, timeout_s: float) -> str:
    """The SHA-256 of what `handle` holds; Refused beyond `limit` bytes or `timeout_s` seconds."""
    digest, total, deadline = hashlib.sha256(), 0, time.monotonic() + timeout_s
    while chunk := handle.read(_HASH_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise Refused(Reason.TOO_LARGE, f"holds more than {limit} bytes")
        if time.monotonic() > deadline:
            raise Refused(Reason.TIMEOUT, f"hashing took longer than {timeout_s:g} s")
        digest.update(chunk)
    return digest.hexdigest()


def scan_file(meta: FileMetadata, known: FileState | None, settled_before: float, root: str | None = None) -> FileScan:
    """One listed file against its ledger line `known`, hashing it only when its size or time moved.
    `root`: the listed directory, which a local file must resolve into to be read. A file modified
    at or after `settled_before` (epoch seconds) is not looked at; one that cannot be hashed
    (NOT_HASHED) counts as changed: there is no content to prove it the same."""
    if meta.last_updated_in_seconds >= settled_before:
        return FileScan(meta.path, Seen.UNSETTLED, None, known is not None)
    if known and known.size == meta.size_in_bytes and known.mtime == meta.last_updated_in_seconds:
        return FileScan(meta.path, Seen.UNCHANGED, known, True)
    state = FileState(meta.path, meta.size_in_bytes, meta.last_updated_in_seconds, content_id(meta.path, root))
    if known and state.sha256 != NOT_HASHED and (known.size, known.sha256) == (state.size, state.sha256):
        return FileScan(meta.path, Seen.TOUCHED,
                        dataclasses.replace(state, batch=known.batch, signal_files=known.signal_files), True)
    return FileScan(meta.path, Seen.CHANGED, state, known is not None)


def with_signal_files(header: FileScan, root: str | None = None) -> FileScan:
    """A WFDB header's scan, its state naming its signal files: those its ledger line recorded when
    the header has not changed since (same size and time, or same content), else those it names now
    (read within the limits). A header whose line was written before signal files were recorded is
    read once and becomes TOUCHED, so the ledger records them. An unsettled header is left as it is."""
    if header.state is None or header.state.signal_files is not None:
        return header
    state = dataclasses.replace(header.state, signal_files=signal_files_of(header.path, root))
    seen = Seen.TOUCHED if header.seen is Seen.UNCHANGED else header.seen
    return dataclasses.replace(header, seen=seen, state=state)


def is_legacy_header(before: FileScan) -> bool:
    """Whether a header's scan (before `with_signal_files`) is an unchanged header whose ledger line
    was written before signal files were recorded: its signal files unknown to the ledger are then
    adopted with the header's batch rather than taken as new (no state of them was kept to compare with)."""
    return before.seen is not Seen.CHANGED and before.state is not None and before.state.signal_files is None


def adopted(signal: FileScan, header: FileScan) -> FileScan:
    """A signal file of a legacy header (`is_legacy_header`) that the ledger does not know: recorded in
    the header's batch (TOUCHED) instead of counting as changed."""
    if signal.seen is not Seen.CHANGED or signal.in_ledger or signal.state is None:
        return signal
    return dataclasses.replace(signal, seen=Seen.TOUCHED,
                               state=dataclasses.replace(signal.state, batch=header.state.batch))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A record against the ledger: whether this batch takes it, and whether it is unchanged."""

    selected: bool
    unchanged: bool


def verdict(files: Iterable[FileScan]) -> Verdict:
    """A record is taken when any file it is decoded from changed and none is still being written; it
    is unchanged when none changed or is unsettled."""
    seen = {f.seen for f in files}
    unsettled = Seen.UNSETTLED in seen
    return Verdict(selected=Seen.CHANGED in seen and not unsettled,
                   unchanged=Seen.CHANGED not in seen and not unsettled)
