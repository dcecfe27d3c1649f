"""Which input files have been published, in which batch: the ledger under ROOT and each batch's manifest.

    ROOT/ledger.jsonl             a header line {"format", "batches", "transform"}, then one line per input
                                  file: {"path", "size", "mtime", "sha256", "batch"}; the
                                  line of a WFDB record's `.hea` also has "signal_files": the paths of
                                  the signal files it names (each of which has a line of its own)
    ROOT/batch-*/inputs.jsonl     the same lines for the files that batch consumed (its manifest)

How a file and a record are compared with the ledger (new, changed, touched, not settled; hashing
within the decoder's limits, or an object store's own checksum) is `inputs/file_states.py`. The
reprocessing job applies those rules on its workers (`graph/selection.py`): it reads the file lines
itself, lists INCOMING, hashes what moved and writes the next ledger (its lines in no particular
order) to a hidden sibling, which the launcher installs with one rename (`install_ledger`). The
launcher reads the first line only (`read_ledger_head`), so its time and memory do not grow with
the archive. A WFDB header's line also names its signal files ("signal_files"), so a re-delivered
`.dat` under an unchanged header is reprocessed without reading every header every night; a line
without them (written before they were recorded) has its header read once and its signal files
adopted with the header's batch, without republishing the record.

The rename that publishes a batch folder is the commit point. The ledger is installed after it, so
a run killed between the two leaves a published batch the ledger does not list yet: the next run
rolls it forward from that batch's manifest (`reconcile_head`, then the job). A batch folder
deleted by hand is rolled back the same way: its files count as new again, which is how a batch is
redone. Every read and write goes through Beam `FileSystems`, so ROOT may be a `gs://` prefix.

A ROOT belongs to one transform: the header's `transform` holds the fingerprint of the transform its
batches were normalized with (`ecg_common/transform_fingerprint.py`) and the `--transform_dir` it
came from. A ledger written before it was recorded has none; the next run adopts its own (see
`reprocess_job.claim_transform`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.file_states import HASH_TIMEOUT_S, MAX_HASH_BYTES, NOT_HASHED, FileState, sha256_of
from beam_pipeline.inputs.local_files import is_local
from ecg_common.rejections import ConfigurationError

__all__ = ["FileState", "HASH_TIMEOUT_S", "MAX_HASH_BYTES", "NOT_HASHED", "sha256_of"]  # the file rules, re-exported
LEDGER_FILE = "ledger.jsonl"
MANIFEST_FILE = "inputs.jsonl"
LEDGER_FORMAT = "ecg-reprocess-ledger/1"
_TEMP_INFIX = ".tmp-"
_MAX_HEADER_BYTES = 16 * 2**20
"""The ledger's first line lists every batch's name (~25 bytes each): 16 MB is far beyond any ROOT."""
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TransformClaim:
    """The transform a ROOT belongs to: its fingerprint, and the `--transform_dir` it was read from (for messages)."""

    fingerprint: str
    transform_dir: str


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


def remove_leftover_temp_files(root: str) -> None:
    """Deletes ledger copies a killed run left half-written or never installed (only ever called under
    the run lock, so no run is writing one): on a local disk or an object store alike."""
    pattern = FileSystems.join(root, f".{LEDGER_FILE}{_TEMP_INFIX}*")
    leftovers = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)


@dataclasses.dataclass(frozen=True)
class LedgerHead:
    """The ledger's first line, all the launcher reads of it: the published batches, the transform, and
    whether any file line follows (the lines are read by the reprocessing job's workers)."""

    batches: tuple[str, ...] = ()
    transform: TransformClaim | None = None
    has_files: bool = False

    def with_transform(self, claim: TransformClaim) -> LedgerHead:
        return dataclasses.replace(self, transform=claim)

    def line(self, batches: tuple[str, ...] | None = None) -> str:
        """The first line of a ledger of these batches (by default this head's) and this transform."""
        fields = {"format": LEDGER_FORMAT, "batches": list(self.batches if batches is None else batches)}
        if self.transform is not None:
            fields["transform"] = dataclasses.asdict(self.transform)
        return json.dumps(fields)


def read_ledger_head(root: str) -> LedgerHead:
    """The ledger's first line, without reading the file lines after it."""
    path = FileSystems.join(root, LEDGER_FILE)
    if not FileSystems.exists(path):
        return LedgerHead()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        first = handle.readline(_MAX_HEADER_BYTES)
        has_files = bool(handle.read(1))
    header = json.loads(first.decode("utf-8"))
    if header.get("format") != LEDGER_FORMAT:
        raise ConfigurationError(f"{path} is not a ledger this version understands (format {header.get('format')!r})")
    claim = header.get("transform")
    return LedgerHead(tuple(header["batches"]), TransformClaim(**claim) if claim else None, has_files)


@dataclasses.dataclass(frozen=True)
class Reconciled:
    """The ledger's head agreeing with the batch folders that exist, and what the file lines need for
    it (applied by the job, `graph/selection.py`): batches whose lines are dropped (deleted by hand,
    so their files are redone), and batches rolled forward from their manifests (published after the
    ledger was last written)."""

    head: LedgerHead
    dropped: tuple[str, ...]
    rolled_forward: tuple[str, ...]


def reconcile_head(head: LedgerHead, complete_batches: list[str]) -> Reconciled:
    """The head agreeing with the batch folders that exist (`complete_batches`, oldest first): a batch
    it lists that is gone is dropped, a published batch it does not list is rolled forward, each with
    a warning."""
    present = set(complete_batches)
    dropped = tuple(b for b in head.batches if b not in present)
    for batch in dropped:
        _log.warning("batch %s is listed in the ledger but no longer exists: its files will be processed again",
                     batch)
    rolled = tuple(sorted(present - set(head.batches)))
    for batch in rolled:
        _log.warning("batch %s was published but not yet recorded (a run stopped right after publishing): "
                     "recording it now", batch)
    batches = tuple(b for b in head.batches if b in present) + rolled
    return Reconciled(dataclasses.replace(head, batches=batches), dropped, rolled)


def write_ledger_head(root: str, head: LedgerHead) -> None:
    """A ledger of no file line: its head alone (every batch that consumed files was deleted by hand)."""
    _write_text(FileSystems.join(root, LEDGER_FILE), head.line() + "\n")


def new_ledger_path(root: str) -> str:
    """Where a run's job writes the ledger it leaves (`install_ledger` puts it in place): a hidden sibling
    of the ledger, which `remove_leftover_temp_files` deletes if the run is killed first."""
    return FileSystems.join(root, f".{LEDGER_FILE}{_TEMP_INFIX}{uuid.uuid4().hex[:12]}")


def install_ledger(root: str, written: str) -> None:
    """Replaces the ledger by the one the job wrote at `written`: `os.replace` on a local disk (a reader
    sees the old or the new ledger, never half of one), a rename on an object store (a copy over the
    old object, which is replaced whole, then the delete of the copy's source)."""
    target = FileSystems.join(root, LEDGER_FILE)
    if is_local(target):
        os.replace(written, target)
    else:
        FileSystems.rename([written], [target])


def discard_new_ledger(written: str) -> None:
    """Deletes a ledger the job wrote that is not to be installed (nothing in it changed)."""
    if FileSystems.exists(written):
        FileSystems.delete([written])
