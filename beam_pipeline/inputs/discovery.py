"""Finding the input files of a run and pairing them with their labels (driver side, no decoding).

Listing goes through Beam's `FileSystems`, so the same code lists a local folder or a `gs://`
bucket. Every `.mat` file found becomes exactly one `RecordSource`; problems that are known before
decoding (a duplicate record id, a training record with no usable label) ride along on the source
as a `Rejection`, so the pipeline reports them through the same `errors/` output as decoding failures.
A local directory is listed by `local_files.py`, which also says which entries must not be opened
(symbolic links leaving the directory, FIFOs, broken links); a subdirectory it could not list
becomes one rejected source (`unlistable`), counted among the files found, so nothing it holds
vanishes without a word.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import posixpath

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs import local_files as local_inputs
from beam_pipeline.inputs.labels import LabelProblem, Labels
from beam_pipeline.inputs.local_files import UnlistableDirectory, is_local
from ecg_common.rejections import ConfigurationError, Reason, Rejection
from ecg_common.schema import TRAIN_SPLIT, UNKNOWN_LABEL
from ecg_decode.pairing import (HEADER_SUFFIX, MAT_SUFFIX, header_for, headers_by_base, is_header, is_record,
                                wfdb_records)


@dataclasses.dataclass(frozen=True)
class RecordSource:
    """One `.mat` file to process: where it is, its id, split and label, and its WFDB header if any."""

    path: str
    record_id: str
    split: str
    label: int = UNKNOWN_LABEL
    size_bytes: int = 0
    header_path: str | None = None
    rejection: Rejection | None = None
    input_root: str | None = None
    """The input directory it was found under: whoever opens the file checks it is still inside."""
    codes: tuple[str, ...] | None = None
    """Multi-label runs: the class names or codes a multi-label labels file gives it (None: none given)."""


def _stem(path: str) -> str:
    """The record id: the file name without `.mat`. Bytes that are not UTF-8 (possible in local file
    names) are spelled `\\xNN`, so the id can be written to JSON and to a TFRecord as it is. Every other
    name, backslashes included, is its own id, so a labels file names it as it is written; the price is
    that a name holding a literal `\\xNN` gives the same id as the byte, which `find_records` rejects
    (in one split, like any second file with an id) as a `duplicate_id` naming both files."""
    stem = posixpath.splitext(posixpath.basename(path))[0]
    return os.fsencode(stem).decode("utf-8", "backslashreplace") if is_local(path) else stem


def _duplicate_detail(record_id: str, path: str, first_path: str) -> str:
    """Why `path` is rejected as a second file with the id of `first_path`. The id spelling is not
    injective (a name with byte 0xE9 and one with the four characters `\\xe9` give one id; so do `.mat`
    and `.MAT`), so when the names differ both paths are given as bytes, where they can be told apart."""
    if posixpath.basename(path) == posixpath.basename(first_path):
        return f"record id {record_id!r} also at {first_path}"
    return (f"record id {record_id!r} also at {os.fsencode(first_path)!r} (kept, first by path); this file is "
            f"{os.fsencode(path)!r}: different names, one id (ids spell bytes that are not UTF-8 as \\xNN)")


def list_file_metadata(directory: str) -> list[FileMetadata]:
    """All files under `directory`, recursively, with size and modification time, sorted by path; a
    local subdirectory that could not be listed is an `UnlistableDirectory` entry among them.

    Raises ConfigurationError when a local directory does not exist or cannot be listed itself: that
    is broken configuration, not a bad record. An object store (gs://) has no directories, only
    objects under a prefix, so there a missing prefix simply lists nothing.
    """
    if is_local(directory) and not FileSystems.exists(directory):
        raise ConfigurationError(f"input directory not found: {directory}")
    if is_local(directory):
        listing = local_inputs.walk(directory)
        top = next((m for m in listing if isinstance(m, UnlistableDirectory) and m.path == directory), None)
        if top is not None:
            raise ConfigurationError(f"input directory {directory}: {top.detail}")
        return listing
    return sorted(objects_under(directory), key=lambda m: m.path)


def objects_under(directory: str) -> list[FileMetadata]:
    """Every object under a prefix of an object store (`gs://`), through Beam, in no particular order."""
    return FileSystems.match([FileSystems.join(directory.rstrip("/"), "**")])[0].metadata_list


def check_input_directory(directory: str) -> None:
    """Raises ConfigurationError, before a job starts, when a local input directory does not exist or
    cannot be listed itself (its files are listed inside the job, `graph/sources.py`); an object store
    prefix has nothing to check (a missing one lists nothing)."""
    if not is_local(directory):
        return
    if not os.path.isdir(directory):
        raise ConfigurationError(f"input directory not found: {directory}")
    try:
        with os.scandir(directory) as entries:
            next(entries, None)
    except OSError as error:
        raise ConfigurationError(f"input directory {directory}: directory could not be listed: "
                                 f"{type(error).__name__}: {error.strerror or error}") from None


def list_files(directory: str) -> list[tuple[str, int]]:
    """All files under `directory`, recursively, as (path, size) sorted by path."""
    return [(m.path, m.size_in_bytes) for m in list_file_metadata(directory)]


def unlistable_source(directory: str, split: str, entry: UnlistableDirectory) -> RecordSource:
    """A directory that could not be listed, as one rejected source. Its id is its path under the
    input directory with a final `/`, which no record id (a file stem) can equal."""
    record_id = os.fsencode(os.path.relpath(entry.path, directory)).decode("utf-8", "backslashreplace") + "/"
    return RecordSource(entry.path, record_id, split, input_root=directory,
                        rejection=Rejection(record_id, entry.path, Reason.UNLISTABLE, entry.detail))


@dataclasses.dataclass(frozen=True)
class LabelEntry:
    """What the labels file says of one record id: its usable label (UNKNOWN_LABEL: none), its classes
    as written (multi-label files) and the first problem of its lines, if any."""

    label: int = UNKNOWN_LABEL
    codes: tuple[str, ...] | None = None
    problem: LabelProblem | None = None
    usable: bool = False
    """Whether a line of the file gives it a usable label (an id with none that has no file is a
    finding, `label_without_file`)."""


def label_entries(labels: Labels) -> dict[str, LabelEntry]:
    """Every record id the labels file names (usable or not), with what it says of it."""
    problems: dict[str, LabelProblem] = {}
    for problem in labels.problems:
        problems.setdefault(problem.record_id, problem)
    ids = set(labels.by_id) | set(problems)
    return {record_id: LabelEntry(labels.by_id.get(record_id, UNKNOWN_LABEL), labels.codes.get(record_id),
                                  problems.get(record_id), record_id in labels.by_id) for record_id in ids}


def record_base(path: str) -> str | None:
    """The key that pairs a `.mat` with its `.hea` (the path without the suffix); None for any other file."""
    if is_record(path):
        return path[: -len(MAT_SUFFIX)]
    if is_header(path):
        return path[: -len(HEADER_SUFFIX)]
    return None


def pair(directory: str, split: str, files: list[tuple[str, int]],
         vetting: local_inputs.Vetting | None = None) -> list[RecordSource]:
    """The record files among `files` (paths with one `record_base`, with sizes) as unlabelled
    RecordSources: each `.mat` with its header, or a `.hea` with no `.mat` beside it (a WFDB record);
    a file that must not be opened carries its refusal. `vetting`: the `vetting_for(directory)` of a
    caller that pairs many groups of one listing, so the input root and each folder are resolved once
    for all of them instead of once per group (a record); by default one for this call."""
    paths = sorted(path for path, _ in files)
    size_of = dict(files)
    headers = headers_by_base(paths)
    wfdb = set(wfdb_records(paths))
    vetting = vetting if vetting is not None else vetting_for(directory)
    sources = []
    for path in paths:
        if not is_record(path) and path not in wfdb:
            continue
        record_id = _stem(path)
        base = dict(path=path, record_id=record_id, split=split, size_bytes=size_of[path],
                    header_path=None if path in wfdb else header_for(path, headers), input_root=directory)
        refusal = _refusal(vetting, path, base["header_path"])
        sources.append(RecordSource(**base, rejection=None if refusal is None else Rejection(record_id, path, *refusal)))
    return sources


def resolve(candidates: list[RecordSource], entry: LabelEntry | None, labels_in_header: bool = False
            ) -> list[RecordSource]:
    """The files of one split that share one record id, with the label attached or the reason they are
    not read: a refused file keeps its refusal (and is not this id's file: a good file with the same
    id is still read); of the others the first by path is processed and the rest are `duplicate_id`.
    A training record needs a valid label (unless `labels_in_header`: its classes are read with its
    header, so one without them is rejected when decoded); a test record keeps its label when the
    labels file has one."""
    entry = entry or LabelEntry()
    resolved, first_path = [], None
    for source in sorted(candidates, key=lambda s: s.path):
        if source.rejection is not None:
            resolved.append(source)
        elif first_path is not None:
            detail = _duplicate_detail(source.record_id, source.path, first_path)
            resolved.append(dataclasses.replace(
                source, rejection=Rejection(source.record_id, source.path, Reason.DUPLICATE_ID, detail)))
        else:
            first_path = source.path
            resolved.append(_labelled(source, entry, labels_in_header))
    return resolved


def _labelled(source: RecordSource, entry: LabelEntry, labels_in_header: bool) -> RecordSource:
    if source.split == TRAIN_SPLIT and entry.label == UNKNOWN_LABEL and not labels_in_header:
        problem = entry.problem or LabelProblem(source.record_id, Reason.MISSING_LABEL,
                                                "no label for this record in the labels file")
        return dataclasses.replace(source, rejection=Rejection(source.record_id, source.path, problem.reason,
                                                               problem.detail))
    return dataclasses.replace(source, label=entry.label, codes=entry.codes)


def find_records(directory: str, split: str, labels: Labels,
                 listing: list[FileMetadata] | None = None, labels_in_header: bool = False) -> list[RecordSource]:
    """The `.mat` files under `directory` as RecordSources of `split`, with labels and headers attached,
    the WFDB records (a `.hea` without a `.mat`: `pairing.wfdb_records`), and one rejected source per
    subdirectory that could not be listed: `pair`, then `resolve`, here in one process (the tests'
    reference for the same steps that both pipeline commands run inside their jobs, `graph/sources.py`).
    `listing` is a listing of `directory` already taken; by default the directory is listed here.
    """
    listing = list_file_metadata(directory) if listing is None else listing
    sources = [unlistable_source(directory, split, m) for m in listing if isinstance(m, UnlistableDirectory)]
    by_base: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for entry in listing:
        if not isinstance(entry, UnlistableDirectory) and (base := record_base(entry.path)) is not None:
            by_base[base].append((entry.path, entry.size_in_bytes))
    by_id: dict[str, list[RecordSource]] = collections.defaultdict(list)
    vetting = vetting_for(directory)
    for files in by_base.values():
        for source in pair(directory, split, files, vetting):
            by_id[source.record_id].append(source)
    entries = label_entries(labels)
    resolved = [s for record_id, candidates in by_id.items()
                for s in resolve(candidates, entries.get(record_id), labels_in_header)]
    return sources + sorted(resolved, key=lambda s: s.path)


def vetting_for(directory: str) -> local_inputs.Vetting | None:
    """The `local_files.Vetting` of a local input directory; None for remote storage (nothing to vet)."""
    return local_inputs.Vetting(directory) if is_local(directory) else None


def _refusal(vetting: local_inputs.Vetting | None, path: str, header_path: str | None) -> tuple[str, str] | None:
    """Why a local `.mat` file (or its `.hea` header) must not be opened, if it must not (`vetting`: of
    its local input directory; None for remote storage)."""
    if vetting is None or not is_local(path):
        return None
    if (refusal := vetting.refusal(path)) is not None:
        return refusal
    if header_path is not None and (refusal := vetting.refusal(header_path)) is not None:
        return refusal[0], f"header {header_path}: {refusal[1]}"
    return None


def label_file_findings(labels: Labels, sources: list[RecordSource], labels_path: str) -> list[Rejection]:
    """Labels-file findings: ids without a `.mat` file, then every unusable line in file order (with its
    line number in the detail), also one naming a record that is rejected for it as well.

    They go to `errors/labels.jsonl`; they are not input files, so they are not part of the
    found = written + rejected reconciliation.
    """
    with_file = {s.record_id for s in sources}
    findings = [without_file(record_id, labels_path) for record_id in sorted(set(labels.by_id) - with_file)]
    return findings + line_findings(labels, labels_path)


def without_file(record_id: str, labels_path: str) -> Rejection:
    """The finding for a labelled record id that no input file has."""
    return Rejection(record_id, labels_path, Reason.LABEL_WITHOUT_FILE, "labelled record has no .mat file")


def line_findings(labels: Labels, labels_path: str) -> list[Rejection]:
    """The labels file's unusable lines as findings, in file order."""
    return [Rejection(p.record_id, labels_path, p.reason, p.detail) for p in labels.problems]
