"""Runs reprocessing's in-job selection (`graph/selection.py`) alone, on the default local runner, and
returns what it decided: the tests of the ledger's rules go through the code the job runs."""
from __future__ import annotations

import base64
import dataclasses
import glob
import math
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata

from ledger_files import Ledger, read_ledger, write_ledger

from beam_pipeline.graph.selection import (FILES_UNSETTLED_COUNTER, LEDGER_LINES_COUNTER, RECORDS_UNCHANGED_COUNTER,
                                           TOUCHED_COUNTER, LedgerInput, SelectChanged)
from beam_pipeline.graph.settings import InputSpec
from beam_pipeline.inputs.discovery import RecordSource
from beam_pipeline.inputs.file_states import FileState, Seen, scan_file
from beam_pipeline.runs.beam_runner import counter, pipeline_options
from beam_pipeline.runs.ledger import LEDGER_FILE, MANIFEST_FILE, LedgerHead
from ecg_common.layout import BATCH_SPLIT

BATCH = "batch-new"


@dataclasses.dataclass(frozen=True)
class Selection:
    sources: list[RecordSource]
    consumed: list[FileState]
    touched: tuple[FileState, ...]
    """States the next ledger records that neither the old ledger had nor this batch consumed."""
    findings: list
    """The labels findings about the selected records."""
    unchanged: int
    unsettled: int
    next_ledger: Ledger
    counts: dict


def _collect(pcoll, path: str, label: str):
    return (pcoll | f"Pickle[{label}]" >> beam.Map(lambda item: base64.b64encode(pickle.dumps(item)).decode())
            | f"Write[{label}]" >> beam.io.WriteToText(path, shard_name_template=""))


def _read(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [pickle.loads(base64.b64decode(line)) for line in handle if line.strip()]


def select(incoming, ledger: Ledger | None = None, root=None, dropped: tuple[str, ...] = (),
           rolled_forward: tuple[str, ...] = (), settled_before: float = math.inf,
           labels_path: str | None = None) -> Selection:
    """The selection of `incoming` against `ledger` (written to a ledger file first; None: no ledger),
    in `root` (a new temporary folder by default) whose batch folders named in `rolled_forward` hold
    manifests the ledger has not recorded."""
    root = str(root or tempfile.mkdtemp(prefix="ecg-select-"))
    os.makedirs(root, exist_ok=True)
    if ledger is not None:
        write_ledger(root, ledger)
    batches = tuple(b for b in (ledger.batches if ledger else ()) if b not in dropped) + tuple(rolled_forward)
    ledger_path = os.path.join(root, LEDGER_FILE)
    next_path = os.path.join(root, ".next-ledger.jsonl")
    spec = LedgerInput(ledger_path if os.path.exists(ledger_path) else None, dropped,
                       tuple((b, os.path.join(root, b, MANIFEST_FILE)) for b in rolled_forward), BATCH,
                       LedgerHead(batches + (BATCH,)).line(), LedgerHead(batches).line(), next_path, settled_before)
    out = tempfile.mkdtemp(prefix="ecg-selected-")
    pipeline = beam.Pipeline(options=pipeline_options([]))
    selected = pipeline | SelectChanged(InputSpec({BATCH_SPLIT: str(incoming)}, labels_path), spec, "test")
    _collect(selected.sources, os.path.join(out, "sources"), "sources")
    _collect(selected.consumed, os.path.join(out, "consumed"), "consumed")
    _collect(selected.label_findings, os.path.join(out, "findings"), "findings")
    result = pipeline.run()
    result.wait_until_finish()
    counts = {name: counter(result, name) for name in
              (RECORDS_UNCHANGED_COUNTER, FILES_UNSETTLED_COUNTER, TOUCHED_COUNTER, LEDGER_LINES_COUNTER,
               f"{BATCH_SPLIT}_files_found")}
    next_ledger = Ledger()
    if os.path.exists(next_path):
        os.replace(next_path, os.path.join(out, LEDGER_FILE))
        next_ledger = read_ledger(out)
    consumed = sorted(_read(os.path.join(out, "consumed")), key=lambda s: s.path)
    consumed_paths = {s.path for s in consumed}
    old = ledger.files if ledger else {}
    touched = tuple(s for p, s in sorted(next_ledger.files.items()) if p not in consumed_paths and old.get(p) != s)
    assert not glob.glob(os.path.join(root, ".ledger.jsonl.tmp-*"))
    return Selection(sorted(_read(os.path.join(out, "sources")), key=lambda s: s.path), consumed, touched,
                     _read(os.path.join(out, "findings")), counts[RECORDS_UNCHANGED_COUNTER],
                     counts[FILES_UNSETTLED_COUNTER], next_ledger, counts)


@dataclasses.dataclass(frozen=True)
class Scan:
    """The incoming files against the ledger: current states, and which files are new or changed."""

    states: Mapping[str, FileState]
    changed: frozenset[str]
    touched: tuple[FileState, ...]
    """Unchanged content under a new modification time: recorded so the next run does not hash them again."""
    unsettled: frozenset[str]
    """Modified too recently (maybe still being uploaded): left for a later run."""


def scan(listing: Iterable[FileMetadata], ledger: Ledger, settled_before: float, root: str | None = None) -> Scan:
    """Compares listed files with the ledger one by one (`file_states.scan_file`, hashing only those
    whose size or time moved), in one process: the per-file rule the job applies on its workers."""
    states: dict[str, FileState] = {}
    changed, unsettled, touched = set(), set(), []
    for meta in listing:
        seen = scan_file(meta, ledger.files.get(meta.path), settled_before, root)
        if seen.seen is Seen.UNSETTLED:
            unsettled.add(meta.path)
            continue
        states[meta.path] = seen.state
        if seen.seen is Seen.TOUCHED:
            touched.append(seen.state)
        elif seen.seen is Seen.CHANGED:
            changed.add(meta.path)
    return Scan(states, frozenset(changed), tuple(touched), frozenset(unsettled))
