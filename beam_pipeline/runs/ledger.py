"""Which input files have been published, in which batch: the ledger under ROOT and each batch's manifest.

    ROOT/ledger.jsonl             a header line {"format", "batches", "transform"}, then one line per input
                                  file: {"path", "size", "mtime", "sha256", "batch"}, sorted by path; the
                                  line of a WFDB record's `.hea` also has "signal_files": the paths of
                                  the signal files it names (each of which has a line of its own)
    ROOT/batch-*/inputs.jsonl     the same lines for the files that batch consumed (its manifest)

A file is new when its path is not in the ledger, changed when its size or content hash differs. A
record is new or changed when any file it is decoded from is: its `.mat` and `.hea`, or a WFDB
record's `.hea` and every signal file it names (`scan_signal_files`), so a re-delivered `.dat` under
an unchanged header is reprocessed. A signal file the header names but the listing lacks is not
recorded: the record is rejected when decoded (`unreadable`), and is changed again once it arrives.
The header's "signal_files" spare reading every unchanged header every night to learn its files.
A ledger line without "signal_files" (written before they were recorded) is read as before; its
header is read once, and the signal files it names are recorded as they are now, with the header's
batch, without republishing the record (no state of them was kept to compare with).
Hashing every file every night would read the whole archive, so a file whose size and modification
time both match its ledger line is taken as unchanged without reading it; one whose time moved but
whose content hash did not (touched, copied with a new time) is not reprocessed either.

Hashing reads what decoding would read, under the same rules (`inputs/opening.py`): a local file
is hashed only if it resolves to a regular file inside INCOMING (never a FIFO, a device or a link
out of the tree), and no file beyond MAX_HASH_BYTES or HASH_TIMEOUT_S. A file refused that way is
recorded with an empty `sha256` (it was not read): it counts as changed whenever its size or time
moves, so it goes to a batch, where decoding rejects it with its reason.

The rename that publishes a batch folder is the commit point. The ledger is rewritten after it, so
a run killed between the two leaves a published batch the ledger does not list yet: `reconcile`
rolls the ledger forward from that batch's manifest at the start of the next run. A batch folder
deleted by hand is rolled back the same way: its files count as new again, which is how a batch is
redone. Every read and write goes through Beam `FileSystems`, so ROOT may be a `gs://` prefix.

A ROOT belongs to one transform: the header's `transform` holds the fingerprint of the transform its
batches were normalized with (`ecg_common/transform_fingerprint.py`) and the `--transform_dir` it
came from. A ledger written before it was recorded has none; the next run adopts its own (see
`reprocess_job.claim_transform`).
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import UnlistableDirectory, is_local
from beam_pipeline.inputs.record_files import signal_files_of
from ecg_common.rejections import ConfigurationError, Reason
from ecg_decode.file_limits import MAX_FILE_BYTES
from ecg_decode.opening import Refused, open_local

LEDGER_FILE = "ledger.jsonl"
MANIFEST_FILE = "inputs.jsonl"
LEDGER_FORMAT = "ecg-reprocess-ledger/1"
_TEMP_INFIX = ".tmp-"
_HASH_CHUNK_BYTES = 4 * 2**20
MAX_HASH_BYTES = MAX_FILE_BYTES
"""No file larger than decoding accepts is hashed whole: it would only be rejected as `too_large`."""
HASH_TIMEOUT_S = 300.0
"""Wall-clock bound on hashing one file (checked between chunks): reading MAX_HASH_BYTES from a local
disk takes about a second, so only a stalling remote store or mount comes near it."""
NOT_HASHED = ""
"""The `sha256` of a file that was refused unread (see the module docstring)."""
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


@dataclasses.dataclass(frozen=True)
class TransformClaim:
    """The transform a ROOT belongs to: its fingerprint, and the `--transform_dir` it was read from (for messages)."""

    fingerprint: str
    transform_dir: str


@dataclasses.dataclass(frozen=True)
class Ledger:
    """The published batches, oldest first, the latest state of every file they consumed, and the transform."""

    batches: tuple[str, ...] = ()
    files: Mapping[str, FileState] = dataclasses.field(default_factory=dict)
    transform: TransformClaim | None = None
    """None: a new ROOT, or a ledger written before the transform was recorded."""

    def with_batch(self, batch: str, states: Iterable[FileState]) -> Ledger:
        """The ledger after `batch` consumed `states` (later batches win for a file seen before)."""
        files = dict(self.files)
        files.update((s.path, dataclasses.replace(s, batch=batch)) for s in states)
        return dataclasses.replace(self, batches=(*self.batches, batch), files=files)

    def without_batch(self, batch: str) -> Ledger:
        return dataclasses.replace(self, batches=tuple(b for b in self.batches if b != batch),
                                   files={p: s for p, s in self.files.items() if s.batch != batch})

    def with_states(self, states: Iterable[FileState]) -> Ledger:
        files = dict(self.files)
        files.update((s.path, s) for s in states)
        return dataclasses.replace(self, files=files)

    def with_transform(self, claim: TransformClaim) -> Ledger:
        return dataclasses.replace(self, transform=claim)

    def is_empty(self) -> bool:
        """Nothing published and no file remembered: a new ROOT, where a run with nothing new writes nothing."""
        return not self.batches and not self.files


@dataclasses.dataclass(frozen=True)
class Scan:
    """The incoming files against the ledger: current states, and which files are new or changed."""

    states: Mapping[str, FileState]
    changed: frozenset[str]
    touched: tuple[FileState, ...]
    """Unchanged content under a new modification time: recorded so the next run does not hash them again."""
    unsettled: frozenset[str]
    """Modified too recently (maybe still being uploaded): left for a later run."""


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


def scan(listing: Iterable[FileMetadata], ledger: Ledger, settled_before: float, root: str | None = None) -> Scan:
    """Compares listed files with the ledger, hashing only those whose size or time moved. `root`:
    the listed directory, which a local file must resolve into to be read.

    Files modified at or after `settled_before` (epoch seconds) are not looked at: a writer that is
    not done yet would otherwise have half a file published. A file that cannot be hashed
    (NOT_HASHED) counts as changed: there is no content to prove it the same.
    """
    states: dict[str, FileState] = {}
    changed, unsettled, touched = set(), set(), []
    for meta in listing:
        if meta.last_updated_in_seconds >= settled_before:
            unsettled.add(meta.path)
            continue
        known = ledger.files.get(meta.path)
        if known and known.size == meta.size_in_bytes and known.mtime == meta.last_updated_in_seconds:
            states[meta.path] = known
            continue
        state = FileState(meta.path, meta.size_in_bytes, meta.last_updated_in_seconds, sha256_of(meta.path, root))
        if known and state.sha256 != NOT_HASHED and (known.size, known.sha256) == (state.size, state.sha256):
            state = dataclasses.replace(state, batch=known.batch, signal_files=known.signal_files)
            touched.append(state)
        else:
            changed.add(meta.path)
        states[meta.path] = state
    return Scan(states, frozenset(changed), tuple(touched), frozenset(unsettled))


def scan_signal_files(scanned: Scan, ledger: Ledger, headers: Iterable[str], listing: Iterable[FileMetadata],
                      settled_before: float, root: str | None = None) -> Scan:
    """`scanned` (a scan of the records' `.mat` and `.hea` files) extended to the signal files of the WFDB
    records whose headers are `headers`, so a record counts as changed when any of them is.

    A header's signal files are those its ledger line recorded when the header has not changed since
    (same size and time, or same content), else those it names now (`record_files.signal_files_of`,
    read within the limits); its state carries them (`signal_files`). Those in `listing` are compared
    with the ledger like any file. A ledger line of before signal files were recorded names none: the
    header is read, and its signal files unknown to the ledger are adopted with the header's batch
    (recorded as `touched`) rather than taken as new (see the module docstring).
    """
    listed = {m.path: m for m in listing if not isinstance(m, UnlistableDirectory)}
    states, changed, unsettled = dict(scanned.states), set(scanned.changed), set(scanned.unsettled)
    touched = {s.path: s for s in scanned.touched}
    for header in headers:
        state = states.get(header)
        if state is None:  # not settled yet, or not listed
            continue
        legacy = header not in changed and state.signal_files is None
        if state.signal_files is None:
            state = dataclasses.replace(state, signal_files=signal_files_of(header, root))
            states[header] = state
            if header not in changed:
                touched[header] = state
        parts = scan([listed[p] for p in state.signal_files if p in listed], ledger, settled_before, root)
        for path, part in parts.states.items():
            if legacy and path in parts.changed and path not in ledger.files:
                part = dataclasses.replace(part, batch=state.batch)
                touched[path] = part
            elif path in parts.changed:
                changed.add(path)
            states[path] = part
        touched.update((s.path, s) for s in parts.touched)
        unsettled |= parts.unsettled
    return Scan(states, frozenset(changed), tuple(touched.values()), frozenset(unsettled))


def _read_lines(path: str) -> list[dict]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]


def _write_text(path: str, text: str) -> None:
    """Replaces `path` whole: a local file through a temporary sibling and `os.replace` (a reader
    sees the old or the new ledger, never half of one); an object-store object is replaced whole
    when its upload completes."""
    data = text.encode("utf-8")
    if not is_local(path):
        with FileSystems.create(path) as handle:
            handle.write(data)
        return
    temp = f"{os.path.join(os.path.dirname(path), '.' + os.path.basename(path))}{_TEMP_INFIX}{uuid.uuid4().hex[:12]}"
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def read_ledger(root: str) -> Ledger:
    path = FileSystems.join(root, LEDGER_FILE)
    if not FileSystems.exists(path):
        return Ledger()
    header, *rows = _read_lines(path)
    if header.get("format") != LEDGER_FORMAT:
        raise ConfigurationError(f"{path} is not a ledger this version understands (format {header.get('format')!r})")
    files = {row["path"]: FileState.from_json(row) for row in rows}
    claim = header.get("transform")
    return Ledger(tuple(header["batches"]), files, TransformClaim(**claim) if claim else None)


def write_ledger(root: str, ledger: Ledger) -> None:
    fields = {"format": LEDGER_FORMAT, "batches": list(ledger.batches)}
    if ledger.transform is not None:
        fields["transform"] = dataclasses.asdict(ledger.transform)
    header = json.dumps(fields)
    lines = [header] + [ledger.files[p].to_json() for p in sorted(ledger.files)]
    _write_text(FileSystems.join(root, LEDGER_FILE), "\n".join(lines) + "\n")


def write_manifest(batch_dir: str, states: Iterable[FileState]) -> None:
    lines = [s.to_json() for s in sorted(states, key=lambda s: s.path)]
    with FileSystems.create(FileSystems.join(batch_dir, MANIFEST_FILE)) as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))


def read_manifest(batch_dir: str) -> list[FileState]:
    return [FileState.from_json(row) for row in _read_lines(FileSystems.join(batch_dir, MANIFEST_FILE))]


def reconcile(root: str, ledger: Ledger, complete_batches: list[str]) -> Ledger:
    """The ledger agreeing with the batch folders that exist: batches published after the ledger
    was last written are rolled forward from their manifests, batches deleted since are dropped."""
    present = set(complete_batches)
    for batch in [b for b in ledger.batches if b not in present]:
        _log.warning("batch %s is listed in the ledger but no longer exists: its files will be processed again",
                     batch)
        ledger = ledger.without_batch(batch)
    for batch in sorted(present - set(ledger.batches)):
        _log.warning("batch %s was published but not yet recorded (a run stopped right after publishing): "
                     "recording it now", batch)
        ledger = ledger.with_batch(batch, read_manifest(FileSystems.join(root, batch)))
    return ledger


def remove_leftover_temp_files(root: str) -> None:
    """Deletes half-written ledger copies of a killed run (only ever called under the run lock)."""
    if is_local(root):
        for path in glob.glob(os.path.join(root, f".{LEDGER_FILE}{_TEMP_INFIX}*")):
            os.remove(path)
