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
from ecg_decode.pairing import header_for, headers_by_base, is_record, wfdb_records


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
    pattern = FileSystems.join(directory.rstrip("/"), "**")
    return sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)


def list_files(directory: str) -> list[tuple[str, int]]:
    """All files under `directory`, recursively, as (path, size) sorted by path."""
    return [(m.path, m.size_in_bytes) for m in list_file_metadata(directory)]


def _unlistable_source(directory: str, split: str, entry: UnlistableDirectory) -> RecordSource:
    """A directory that could not be listed, as one rejected source. Its id is its path under the
    input directory with a final `/`, which no record id (a file stem) can equal."""
    record_id = os.fsencode(os.path.relpath(entry.path, directory)).decode("utf-8", "backslashreplace") + "/"
    return RecordSource(entry.path, record_id, split, input_root=directory,
                        rejection=Rejection(record_id, entry.path, Reason.UNLISTABLE, entry.detail))


def find_records(directory: str, split: str, labels: Labels,
                 listing: list[FileMetadata] | None = None, labels_in_header: bool = False) -> list[RecordSource]:
    """The `.mat` files under `directory` as RecordSources of `split`, with labels and headers attached,
    the WFDB records (a `.hea` without a `.mat`: `pairing.wfdb_records`), and one rejected source per
    subdirectory that could not be listed.

    The record id is the file stem. When two files share an id, the first by path is processed and the
    others are rejected as duplicates. A training record needs a valid label; a test record keeps its
    label when the labels file has one. `listing` is a listing of `directory` already taken (so a caller
    comparing it with a ledger decides on the same files); by default the directory is listed here.
    With `labels_in_header` (`--dx_from_header`) a record's classes are read with its header, so a
    training record without them is rejected when decoded, not here.
    """
    listing = list_file_metadata(directory) if listing is None else listing
    sources = [_unlistable_source(directory, split, m) for m in listing if isinstance(m, UnlistableDirectory)]
    files = [(m.path, m.size_in_bytes) for m in listing if not isinstance(m, UnlistableDirectory)]
    headers = headers_by_base(p for p, _ in files)
    wfdb = set(wfdb_records(p for p, _ in files))
    first_path_of: dict[str, str] = {}
    for path, size in files:
        if not is_record(path) and path not in wfdb:
            continue
        record_id = _stem(path)
        base = dict(path=path, record_id=record_id, split=split, size_bytes=size,
                    header_path=None if path in wfdb else header_for(path, headers), input_root=directory)
        if (refusal := _refusal(directory, path, base["header_path"])) is not None:
            sources.append(RecordSource(**base, rejection=Rejection(record_id, path, *refusal)))
            continue  # not registered as this id's file: a good file with the same id is still read
        if record_id in first_path_of:
            detail = _duplicate_detail(record_id, path, first_path_of[record_id])
            sources.append(RecordSource(**base, rejection=Rejection(record_id, path, Reason.DUPLICATE_ID, detail)))
            continue
        first_path_of[record_id] = path
        label = labels.by_id.get(record_id, UNKNOWN_LABEL)
        problem = labels.problem_for(record_id)
        if split == TRAIN_SPLIT and label == UNKNOWN_LABEL and not labels_in_header:
            problem = problem or LabelProblem(record_id, Reason.MISSING_LABEL, "no label for this record in the labels file")
            sources.append(RecordSource(**base, rejection=Rejection(record_id, path, problem.reason, problem.detail)))
            continue
        sources.append(RecordSource(**base, label=label, codes=labels.codes.get(record_id)))
    return sources


def _refusal(directory: str, path: str, header_path: str | None) -> tuple[str, str] | None:
    """Why a local `.mat` file (or its `.hea` header) must not be opened, if it must not."""
    if not is_local(path):
        return None
    if (refusal := local_inputs.refusal(path, directory)) is not None:
        return refusal
    if header_path is not None and (refusal := local_inputs.refusal(header_path, directory)) is not None:
        return refusal[0], f"header {header_path}: {refusal[1]}"
    return None


def label_file_findings(labels: Labels, sources: list[RecordSource], labels_path: str) -> list[Rejection]:
    """Labels-file findings: ids without a `.mat` file, then every unusable line in file order (with its
    line number in the detail), also one naming a record that is rejected for it as well.

    They go to `errors/labels.jsonl`; they are not input files, so they are not part of the
    found = written + rejected reconciliation.
    """
    with_file = {s.record_id for s in sources}
    findings = [Rejection(record_id, labels_path, Reason.LABEL_WITHOUT_FILE, "labelled record has no .mat file")
                for record_id in sorted(set(labels.by_id) - with_file)]
    findings += [Rejection(p.record_id, labels_path, p.reason, p.detail) for p in labels.problems]
    return findings
