"""Finding the records inside the job: the graph holds each split's input directory and the labels
file's path, never the file list, so neither the job's size nor the launcher's time and memory grow
with the archive.

  directory -> list it (one worker: a local walk, or FileSystems.match on an object store)
    -> by pairing key (`discovery.record_base`): GroupByKey -> `discovery.pair` (a `.mat` with its
       `.hea`, or a WFDB record) -> by record id -+
  labels file -> `labels.read_labels` (one worker) -> by record id ---------+- CoGroupByKey
    -> `discovery.resolve` -> the sources of each split (labelled, or rejected: duplicate, refused,
       no label), counted as `<split>_files_found`
    -> labelled ids with no file, and the file's unusable lines -> the labels findings, in file order

The rules are `inputs/discovery.py`'s, the same that `find_records` applies in one process
(reprocessing). Both passes read the sources this computes once.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph import progress
from beam_pipeline.graph.counts import TALLY_TAG, TallyingDoFn
from beam_pipeline.graph.settings import InputSpec
from beam_pipeline.inputs import local_files
from beam_pipeline.inputs.discovery import (RecordSource, label_entries, line_findings, objects_under, pair,
                                            record_base, resolve, unlistable_source, vetting_for, without_file)
from beam_pipeline.inputs.labels import read_labels
from beam_pipeline.inputs.local_files import UnlistableDirectory, is_local
from ecg_common.rejections import Rejection

FOUND_COUNTER = "_files_found"
"""Counter `<split>_files_found`: the split's files found, each written or rejected in the end."""
ACCEPTED_COUNTER = "_sources_accepted"
"""Counter `<split>_sources_accepted`: files found that were not rejected before decoding."""
LABEL_FINDINGS_COUNTER = "label_file_findings"
REPORT_CANDIDATES = 32
"""Training sources (first by path) kept for the run report to pick its example among."""
_LABELS_TAG = "_labels"
UNLISTABLE_TAG = "unlistable"
_FINDINGS_TAG = "findings"
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class FoundSources:
    """The outputs of `FindSources`: each split's sources, the labels findings, (one list) the first
    training sources by path that passed discovery, for the report, and the counts (`finish.py`)."""

    by_split: dict[str, beam.PCollection]
    label_findings: beam.PCollection
    report_candidates: beam.PCollection
    tallies: list[beam.PCollection]


def list_entries(directory: str):
    """Every entry under `directory`: local files through `local_files.entries_under` (which refuses
    what must not be opened later and names directories it could not list), others through Beam."""
    if is_local(directory):
        return local_files.entries_under(directory)
    return objects_under(directory)


def _list_directory(directory: str, split: str, token: str):
    """`record_file` of every entry of the listing of `directory`, taken on the worker that runs this."""
    listed = 0
    for entry in list_entries(directory):
        if isinstance(entry, UnlistableDirectory):
            progress.note_found(token, split)
        for output in record_file(entry, directory, split):
            listed += not isinstance(output, beam.pvalue.TaggedOutput)
            yield output
    _log.info("listed %s: %d .mat/.hea files", directory, listed)


def record_file(entry: FileMetadata, directory: str, split: str):
    """An entry of a listing of `directory` as `FindSources` takes it: (pairing key, (path, size)) for a
    record-like file, its rejected source keyed by its id (tagged `unlistable`) for an unlistable
    subdirectory, nothing for any other file."""
    if isinstance(entry, UnlistableDirectory):
        source = unlistable_source(directory, split, entry)
        yield beam.pvalue.TaggedOutput(UNLISTABLE_TAG, (source.record_id, source))
    elif (base := record_base(entry.path)) is not None:
        yield as_bytes(base), (as_bytes(entry.path), entry.size_in_bytes)


def as_bytes(path: str) -> bytes:
    """A path as bytes for Beam's coders, which encode `str` as UTF-8: a local name that is not UTF-8
    arrives from the listing with surrogate escapes, which UTF-8 cannot encode."""
    return path.encode("utf-8", "surrogateescape")


class _PairFn(beam.DoFn):
    """(pairing key, [(path, size)]) -> (record id, RecordSource) per record file of the group
    (`discovery.pair`), with one `Vetting` per bundle: a group is one record, and vetting each group
    on its own resolved the input root and the record's folder again for every record."""

    def __init__(self, directory: str, split: str, token: str):
        self._directory = directory
        self._split = split
        self._token = token
        self._vetting: local_files.Vetting | None = None

    def start_bundle(self):
        self._vetting = vetting_for(self._directory)

    def process(self, element):
        _, files = element
        named = [(path.decode("utf-8", "surrogateescape"), size) for path, size in files]
        for source in pair(self._directory, self._split, named, self._vetting):
            progress.note_found(self._token, self._split)
            yield source.record_id, source


def _label_entries(labels_path: str, normal_labels: tuple[str, ...], multi_label: bool):
    """(record id, LabelEntry) per id the labels file names; its unusable lines, in file order, as
    findings keyed for sorting."""
    labels = read_labels(labels_path, normal_labels, multi_label=multi_label)
    yield from label_entries(labels).items()
    for index, finding in enumerate(line_findings(labels, labels_path)):
        yield beam.pvalue.TaggedOutput(_FINDINGS_TAG, ((1, index), finding))


class _ResolveFn(TallyingDoFn):
    """(record id, {split: candidates, labels: entry}) -> each split's sources (tagged by split), and
    a finding when the labels file gives the id a label but no split has a file of it."""

    def __init__(self, splits: tuple[str, ...], labels_path: str | None, labels_in_header: bool, counted: bool):
        self._splits = splits
        self._labels_path = labels_path
        self._labels_in_header = labels_in_header
        self._counted = counted

    def process(self, element):
        record_id, grouped = element
        entry = next(iter(grouped.get(_LABELS_TAG, ())), None)
        has_file = False
        for split in self._splits:
            candidates = list(grouped.get(split, ()))
            has_file = has_file or bool(candidates)
            for source in resolve(candidates, entry, self._labels_in_header):
                yield beam.pvalue.TaggedOutput(split, source)
                if not self._counted:
                    continue
                self.count(f"{split}{FOUND_COUNTER}")
                if source.rejection is None:
                    self.count(f"{split}{ACCEPTED_COUNTER}")
        if not has_file and entry is not None and entry.usable:
            yield beam.pvalue.TaggedOutput(_FINDINGS_TAG, ((0, record_id), without_file(record_id, self._labels_path)))


class _InOrderFn(TallyingDoFn):
    """All the findings (one list) sorted as `discovery.label_file_findings` gives them: ids without a
    file, then lines; counted unless the caller counts them (`counted=False`)."""

    def __init__(self, counted: bool):
        self._counted = counted

    def process(self, keyed: list[tuple[tuple, Rejection]]):
        for _, finding in sorted(keyed, key=lambda item: item[0]):
            yield finding
        if self._counted:
            self.count(LABEL_FINDINGS_COUNTER, len(keyed))


class FindSources(beam.PTransform):
    """Pipeline root -> FoundSources, for the splits and labels of `inputs`; `token` ties the files
    found to the decode steps' progress lines (`progress.py`).

    `listed`: each split's listing already taken by the caller (`record_file`'s outputs), which then
    decides what to do with the sources (reprocessing: `selection.py` takes the new and changed ones
    and counts those, so `counted=False` leaves the counters to it)."""

    def __init__(self, inputs: InputSpec, token: str, listed: dict | None = None, counted: bool = True):
        super().__init__()
        self._inputs = inputs
        self._token = token
        self._listed = listed
        self._counted = counted

    def expand(self, root):
        inputs, keyed = self._inputs, {}
        for split, directory in inputs.directories.items():
            listed = self._listed[split] if self._listed is not None else (
                root | f"Directory[{split}]" >> beam.Create([directory])
                | f"List[{split}]" >> beam.FlatMap(_list_directory, split, self._token).with_outputs(
                    UNLISTABLE_TAG, main="files"))
            paired = (listed["files"] | f"GroupByBase[{split}]" >> beam.GroupByKey()
                      | f"Pair[{split}]" >> beam.ParDo(_PairFn(directory, split, self._token)))
            keyed[split] = (paired, listed[UNLISTABLE_TAG]) | f"WithUnlistable[{split}]" >> beam.Flatten()
        line_findings_ = []
        if inputs.labels_path is not None:
            entries = (root | "LabelsFile" >> beam.Create([inputs.labels_path])
                       | "ReadLabels" >> beam.FlatMap(_label_entries, inputs.normal_labels, inputs.multi_label
                                                      ).with_outputs(_FINDINGS_TAG, main="entries"))
            keyed[_LABELS_TAG] = entries["entries"]
            line_findings_.append(entries[_FINDINGS_TAG])
        splits = tuple(inputs.directories)
        resolved = (keyed | "JoinById" >> beam.CoGroupByKey()
                    | "Resolve" >> beam.ParDo(_ResolveFn(splits, inputs.labels_path, inputs.labels_in_header,
                                                         self._counted)
                                              ).with_outputs(_FINDINGS_TAG, TALLY_TAG, *splits))
        findings = ((resolved[_FINDINGS_TAG], *line_findings_) | "AllLabelFindings" >> beam.Flatten()
                    | "CollectLabelFindings" >> beam.combiners.ToList()
                    | "LabelFindingsInOrder" >> beam.ParDo(_InOrderFn(self._counted)
                                                           ).with_outputs(TALLY_TAG, main="findings"))
        by_split = {split: resolved[split] for split in splits}
        candidates = (by_split[splits[0]] | "Accepted" >> beam.Filter(lambda s: s.rejection is None)
                      | "ReportCandidates" >> beam.combiners.Top.Of(REPORT_CANDIDATES, key=_path, reverse=True))
        return FoundSources(by_split, findings["findings"], candidates, [resolved[TALLY_TAG], findings[TALLY_TAG]])


def _path(source: RecordSource) -> str:
    return source.path


def write_candidates(candidates, path: str):
    """The report candidates (one list) as one JSON file at `path`."""
    return (candidates | "CandidatesToJson" >> beam.Map(lambda sources: json.dumps([_as_json(s) for s in sources]))
            | "WriteCandidates" >> beam.io.WriteToText(path, shard_name_template=""))


def _as_json(source: RecordSource) -> dict:
    return {"path": source.path, "record_id": source.record_id, "split": source.split,
            "header_path": source.header_path, "input_root": source.input_root}


def read_candidates(path: str) -> list[RecordSource]:
    """The report candidates `write_candidates` wrote, by path; none when it wrote nothing. The
    report draws the first of them that was written without a quality flag; when decoding rejected
    all REPORT_CANDIDATES, the report has no example."""
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8").strip()
    return sorted((RecordSource(**fields) for fields in json.loads(text)), key=_path) if text else []


def candidates_file(temp_dir: str) -> str:
    """Where a run's report candidates go: its temporary folder, removed with it."""
    return FileSystems.join(temp_dir, "report_candidates.json")
