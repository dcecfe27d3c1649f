"""A whole ledger in one process, for tests: set one up under ROOT before a run, read back the one a run
left. The pipeline itself never holds a ledger's file lines: its launcher reads the first line
(`ledger.read_ledger_head`) and the reprocessing job's workers read and write the rest
(`graph/selection.py`)."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.runs.ledger import LEDGER_FILE, FileState, LedgerHead, TransformClaim, read_ledger_head


@dataclasses.dataclass(frozen=True)
class Ledger:
    """The published batches, oldest first, the latest state of every file they consumed, and the transform."""

    batches: tuple[str, ...] = ()
    files: Mapping[str, FileState] = dataclasses.field(default_factory=dict)
    transform: TransformClaim | None = None

    def with_batch(self, batch: str, states: Iterable[FileState]) -> Ledger:
        """The ledger after `batch` consumed `states` (later batches win for a file seen before)."""
        files = dict(self.files)
        files.update((s.path, dataclasses.replace(s, batch=batch)) for s in states)
        return dataclasses.replace(self, batches=(*self.batches, batch), files=files)

    def with_states(self, states: Iterable[FileState]) -> Ledger:
        files = dict(self.files)
        files.update((s.path, s) for s in states)
        return dataclasses.replace(self, files=files)


def read_ledger(root: str) -> Ledger:
    """ROOT's ledger, head and file lines (an empty Ledger when there is none)."""
    path = FileSystems.join(root, LEDGER_FILE)
    if not FileSystems.exists(path):
        return Ledger()
    head = read_ledger_head(root)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        _, *rows = [line for line in handle.read().decode("utf-8").splitlines() if line.strip()]
    files = {state.path: state for state in (FileState.from_json(json.loads(row)) for row in rows)}
    return Ledger(head.batches, files, head.transform)


def write_ledger(root: str, ledger: Ledger) -> None:
    """`ledger` as ROOT's ledger: its head (`LedgerHead.line`), then its file lines by path."""
    head = LedgerHead(ledger.batches, ledger.transform).line()
    lines = [head] + [ledger.files[path].to_json() for path in sorted(ledger.files)]
    with FileSystems.create(FileSystems.join(root, LEDGER_FILE)) as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
