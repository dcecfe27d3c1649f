"""Reprocessing's selection inside the job: which records of INCOMING are new or changed since the
ledger, decided on the workers, so the launcher neither lists INCOMING nor reads the ledger's file
lines nor hashes anything, and its time and memory do not grow with the archive.

  INCOMING -> list it (one worker) -> every entry, by path -----------------------+
  ledger file lines (ReadFromText), minus dropped batches, plus the manifests     |
    of batches rolled forward -> by path ------------------------------------------+- CoGroupByKey
    -> each path's latest ledger line (kept for the next ledger) and its listing entry
  the record-like entries -> `FindSources` (pairing, labels, the discovery rules)
    -> each source wants its files (`.mat`, `.hea`) -> joined with the entries by path
    -> `file_states.scan_file` (hashing here, on the worker holding the file's entry)
    -> by source: a WFDB header names its signal files (`with_signal_files`), which are
       joined with the entries and scanned the same way
    -> `file_states.verdict`: the source is selected (new or changed, settled), or not
  selected sources -> the transform pass; their file states -> the manifest and, with this
  batch's name, the next ledger; touched states -> the next ledger; the labels findings about the
  selected records -> errors/labels.jsonl

The next ledger is written whole by one worker to a hidden sibling of the ledger (`ledger.py`
installs it after publishing): its first line lists the batches with this run's batch only when a
record was selected, which the writer learns from the selection itself (a side input).
"""
from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph import progress
from beam_pipeline.graph.counts import TALLY_TAG, TallyingDoFn
from beam_pipeline.graph.settings import InputSpec
from beam_pipeline.graph.sources import (FOUND_COUNTER, LABEL_FINDINGS_COUNTER, REPORT_CANDIDATES, UNLISTABLE_TAG,
                                         FindSources, as_bytes, list_entries, record_file)
from beam_pipeline.inputs.discovery import RecordSource
from beam_pipeline.inputs.file_states import (FileScan, FileState, Seen, adopted, is_legacy_header, scan_file,
                                              verdict, with_signal_files)
from ecg_decode.pairing import is_wfdb_record

RECORDS_UNCHANGED_COUNTER = "records_unchanged"
FILES_UNSETTLED_COUNTER = "files_not_settled"
TOUCHED_COUNTER = "ledger_files_touched"
"""Files the next ledger records with a new time but the same content (or signal files adopted)."""
LEDGER_LINES_COUNTER = "ledger_files"
"""File lines of the next ledger."""
_LISTED, _KNOWN, _WANTED, _SOURCE, _SCANS, _PENDING = "listed", "known", "wanted", "source", "scans", "pending"
_TOUCHED, _CONSUMED = "touched", "consumed"
_OLD_RANK, _TOUCHED_RANK, _CONSUMED_RANK = 0, 1, 2
"""Which state of a file the next ledger takes, the highest present: its latest line, touched, consumed."""
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LedgerInput:
    """What the job reads of the ledger, and how the run's head (`ledger.reconcile_head`) says to change
    it: the ledger file (None: a new ROOT), batches whose lines are dropped, the manifests of batches
    rolled forward (batch, path), this run's batch name and the next ledger's first line with and
    without it, where the next ledger goes, and when a file is settled (epoch seconds)."""

    ledger_path: str | None
    dropped: tuple[str, ...]
    rolled_forward: tuple[tuple[str, str], ...]
    batch: str
    head_with_batch: str
    head_without_batch: str
    next_ledger_path: str
    settled_before: float


@dataclasses.dataclass
class Selected:
    """The outputs of `SelectChanged`: the selected sources, the labels findings about them, their file
    states (the manifest's lines, each file once), the first of them by path (the report's candidates),
    the path of the next ledger once written, and the counts."""

    sources: beam.PCollection
    label_findings: beam.PCollection
    consumed: beam.PCollection
    report_candidates: beam.PCollection
    ledger_written: beam.PCollection
    tallies: list[beam.PCollection]
    """The selection's counts (`counts.py`)."""


def _entries(directory: str):
    """(path, entry) for every entry under `directory`, record-like or not (signal files are any files)."""
    for entry in list_entries(directory):
        yield as_bytes(entry.path), entry


def _ledger_lines(line: str, dropped: frozenset[str]):
    state = FileState.from_json(json.loads(line))
    if state.batch not in dropped:
        yield as_bytes(state.path), ((_OLD_RANK, ""), state)


def _manifest_lines(line: str, batch: str):
    """A rolled-forward batch's manifest line: the file's state as that batch consumed it (newer than the ledger's)."""
    state = dataclasses.replace(FileState.from_json(json.loads(line)), batch=batch)
    yield as_bytes(state.path), ((_CONSUMED_RANK, batch), state)


def _latest(element):
    """(path, {listed, known}) -> the path's latest ledger state (for the next ledger, tagged `known`)
    and, for a listed path, (path, (entry, latest state or None))."""
    path, grouped = element
    known = max(grouped[_KNOWN], key=lambda ranked: ranked[0], default=None)
    state = None if known is None else known[1]
    if state is not None:
        yield beam.pvalue.TaggedOutput(_KNOWN, (path, (_OLD_RANK, state)))
    for entry in grouped[_LISTED]:
        yield path, (entry, state)


def _wants(source: RecordSource):
    """(path, source key) for each file of the source that the listing has: its own and its header."""
    for path in (source.path, source.header_path):
        if path:
            yield as_bytes(path), as_bytes(source.path)


class _ScanFn(TallyingDoFn):
    """(path, {listed: (entry, state), wanted: source keys}) -> (source key, FileScan) per source that
    wants the file: the file compared with its ledger line, hashed here when its size or time moved."""

    def __init__(self, root: str, settled_before: float):
        self._root = root
        self._settled_before = settled_before

    def process(self, element):
        _, grouped = element
        wanted = list(grouped[_WANTED])
        if not wanted:  # a listed file no record is decoded from: never hashed
            return
        for entry, known in grouped[_LISTED]:
            scanned = scan_file(entry, known, self._settled_before, self._root)
            if scanned.seen is Seen.UNSETTLED:
                self.count(FILES_UNSETTLED_COUNTER)
            for key in wanted:
                yield key, scanned


class _DecideFn(TallyingDoFn):
    """The records against the ledger: (source key, {source, scans[, pending]}) -> the selected sources,
    and the states the next ledger records (tagged `touched` and `consumed`). A WFDB record first
    learns its signal files (tagged `pending`, with the wants of its signal files), unless
    `signal_files_known` (the second visit, with their scans)."""

    def __init__(self, root: str, batch: str, token: str, signal_files_known: bool):
        self._root = root
        self._batch = batch
        self._token = token
        self._signal_files_known = signal_files_known

    def process(self, element):
        key, grouped = element
        if self._signal_files_known:
            for source, scans, legacy_header in grouped[_PENDING]:
                signals = list(grouped[_SCANS])
                header = next(s for s in scans if s.path == source.path)
                if legacy_header:
                    signals = [adopted(s, header) for s in signals]
                yield from self._decide(source, [*scans, *signals])
            return
        (source,) = grouped[_SOURCE]
        scans = list(grouped[_SCANS])
        header = next((s for s in scans if s.path == source.path), None)
        if is_wfdb_record(source.path) and header is not None and header.state is not None:
            legacy = is_legacy_header(header)
            header_now = with_signal_files(header, self._root)
            scans = [header_now if s.path == source.path else s for s in scans]
            yield beam.pvalue.TaggedOutput(_PENDING, (key, (source, scans, legacy)))
            for signal_file in header_now.state.signal_files:
                yield beam.pvalue.TaggedOutput(_WANTED, (as_bytes(signal_file), key))
            return
        yield from self._decide(source, scans)

    def _decide(self, source: RecordSource, scans: list[FileScan]):
        outcome = verdict(scans)
        if outcome.unchanged:
            self.count(RECORDS_UNCHANGED_COUNTER)
        if outcome.selected:
            self.count(f"{source.split}{FOUND_COUNTER}")
            progress.note_found(self._token, source.split)
            yield source
        for scanned in scans:
            if scanned.state is None:
                continue
            if outcome.selected:
                state = dataclasses.replace(scanned.state, batch=self._batch)
                yield beam.pvalue.TaggedOutput(_CONSUMED, (as_bytes(scanned.path), (_CONSUMED_RANK, state)))
            elif scanned.seen is Seen.TOUCHED:
                yield beam.pvalue.TaggedOutput(_TOUCHED, (as_bytes(scanned.path), (_TOUCHED_RANK, scanned.state)))


class _NextStateFn(TallyingDoFn):
    """(path, ranked states) -> the state the next ledger records for the path (consumed over touched
    over its latest line); a consumed one also goes to the manifest (tagged `consumed`)."""

    def process(self, element):
        _, ranked = element
        rank, state = max(ranked, key=lambda item: item[0])
        if rank == _TOUCHED_RANK:
            self.count(TOUCHED_COUNTER)
        if rank == _CONSUMED_RANK:
            yield beam.pvalue.TaggedOutput(_CONSUMED, state)
        yield state.to_json()


class _WriteLedgerFn(TallyingDoFn):
    """All the next ledger's lines (one group) -> the ledger, written whole by this worker at `path`: its
    first line names this run's batch only when some record was selected (`selected`, a side input)."""

    def __init__(self, ledger: LedgerInput):
        self._ledger = ledger

    def process(self, element, selected):
        _, lines = element
        head = self._ledger.head_with_batch if selected else self._ledger.head_without_batch
        written = 0
        with FileSystems.create(self._ledger.next_ledger_path) as handle:
            handle.write((head + "\n").encode("utf-8"))
            for line in lines:
                handle.write((line + "\n").encode("utf-8"))
                written += 1
        self.count(LEDGER_LINES_COUNTER, written)
        yield self._ledger.next_ledger_path


def _path_of(source: RecordSource) -> str:
    return source.path


def _keyed(source: RecordSource):
    return as_bytes(source.path), source


class SelectChanged(beam.PTransform):
    """Pipeline root -> `Selected`: the records of `inputs`' one split (INCOMING) that are new or changed
    against the ledger `ledger` describes, and the next ledger, written. `token` ties the records
    selected to the decode step's progress lines."""

    def __init__(self, inputs: InputSpec, ledger: LedgerInput, token: str):
        super().__init__()
        (self._split, self._incoming), = inputs.directories.items()
        self._inputs = inputs
        self._ledger = ledger
        self._token = token

    def expand(self, root):
        split, incoming, ledger = self._split, self._incoming, self._ledger
        entries = (root | "Incoming" >> beam.Create([incoming])
                   | "ListIncoming" >> beam.FlatMap(_entries) | "SpreadEntries" >> beam.Reshuffle())
        known = [root | "NoLedgerYet" >> beam.Create([])]
        if ledger.ledger_path is not None:
            known.append(root | "ReadLedger" >> beam.io.ReadFromText(ledger.ledger_path, skip_header_lines=1)
                         | "LedgerLines" >> beam.FlatMap(_ledger_lines, frozenset(ledger.dropped)))
        for index, (batch, manifest) in enumerate(ledger.rolled_forward):
            known.append(root | f"ReadManifest[{index}]" >> beam.io.ReadFromText(manifest)
                         | f"ManifestLines[{index}]" >> beam.FlatMap(_manifest_lines, batch))
        latest = ({_LISTED: entries, _KNOWN: known | "AllKnown" >> beam.Flatten()}
                  | "ByPath" >> beam.CoGroupByKey()
                  | "Latest" >> beam.FlatMap(_latest).with_outputs(_KNOWN, main="listed"))
        listed = latest["listed"]

        record_files = (entries | "Entries" >> beam.Values()
                        | "RecordFiles" >> beam.FlatMap(record_file, incoming, split
                                                        ).with_outputs(UNLISTABLE_TAG, main="files"))
        found = root | "FindSources" >> FindSources(self._inputs, self._token, listed={split: record_files},
                                                    counted=False)
        sources = found.by_split[split]
        scans = ({_LISTED: listed, _WANTED: sources | "Wants" >> beam.FlatMap(_wants)}
                 | "FilesOfSources" >> beam.CoGroupByKey()
                 | "Scan" >> beam.ParDo(_ScanFn(incoming, ledger.settled_before)
                                        ).with_outputs(TALLY_TAG, main="scans"))
        first = ({_SOURCE: sources | "BySource" >> beam.Map(_keyed), _SCANS: scans["scans"]}
                 | "SourceWithScans" >> beam.CoGroupByKey()
                 | "Decide" >> beam.ParDo(_DecideFn(incoming, ledger.batch, self._token, False)
                                          ).with_outputs(_PENDING, _WANTED, _TOUCHED, _CONSUMED, TALLY_TAG,
                                                         main="selected"))
        signal_scans = ({_LISTED: listed, _WANTED: first[_WANTED]} | "SignalFiles" >> beam.CoGroupByKey()
                        | "ScanSignalFiles" >> beam.ParDo(_ScanFn(incoming, ledger.settled_before)
                                                          ).with_outputs(TALLY_TAG, main="scans"))
        second = ({_PENDING: first[_PENDING], _SCANS: signal_scans["scans"]}
                  | "WfdbWithSignalFiles" >> beam.CoGroupByKey()
                  | "DecideWfdb" >> beam.ParDo(_DecideFn(incoming, ledger.batch, self._token, True)
                                               ).with_outputs(_TOUCHED, _CONSUMED, TALLY_TAG, main="selected"))
        selected = (first["selected"], second["selected"]) | "Selected" >> beam.Flatten()

        next_states = ((latest[_KNOWN], first[_TOUCHED], first[_CONSUMED], second[_TOUCHED], second[_CONSUMED])
                       | "AllStates" >> beam.Flatten() | "StatesByPath" >> beam.GroupByKey()
                       | "NextState" >> beam.ParDo(_NextStateFn()
                                                   ).with_outputs(_CONSUMED, TALLY_TAG, main="lines"))
        any_selected = beam.pvalue.AsSingleton(
            selected | "CountSelected" >> beam.combiners.Count.Globally() | "AnySelected" >> beam.Map(bool))
        ledger_written = (next_states["lines"] | "OneLedger" >> beam.Map(lambda line: (None, line))
                          | "AllLines" >> beam.GroupByKey()
                          | "WriteNextLedger" >> beam.ParDo(_WriteLedgerFn(ledger), any_selected
                                                          ).with_outputs(TALLY_TAG, main="path"))
        selected_ids = beam.pvalue.AsDict(selected | "SelectedIds" >> beam.Map(lambda s: (s.record_id, None))
                                           | "EachIdOnce" >> beam.Distinct())
        findings = (found.label_findings
                    | "AboutSelected" >> beam.Filter(lambda finding, ids: finding.record_id in ids, selected_ids)
                    | "CountFindings" >> beam.ParDo(_CountFindingsFn()).with_outputs(TALLY_TAG, main="findings"))
        candidates = (selected | "Accepted" >> beam.Filter(lambda s: s.rejection is None)
                      | "ReportCandidates" >> beam.combiners.Top.Of(REPORT_CANDIDATES, key=_path_of, reverse=True))
        tallies = [scans[TALLY_TAG], first[TALLY_TAG], signal_scans[TALLY_TAG], second[TALLY_TAG],
                   next_states[TALLY_TAG], ledger_written[TALLY_TAG], findings[TALLY_TAG]]
        return Selected(selected, findings["findings"], next_states[_CONSUMED], candidates, ledger_written["path"],
                        tallies)


class _CountFindingsFn(TallyingDoFn):
    def process(self, finding):
        self.count(LABEL_FINDINGS_COUNTER)
        yield finding
