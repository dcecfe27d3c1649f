"""Parsing of the labels file (`reference.txt` and its cousins) into record id -> 0/1.

Label files are edited by hand and in spreadsheets, so the parser accepts a tab, comma, semicolon or
spaces between id and label, an optional header line, a UTF-8 BOM, CRLF line ends and blank lines.
Lines it cannot use are not fatal: they come back as problems with a reason code, and the records
they name are rejected later with that reason instead of being trained on with a guessed label.
"""
from __future__ import annotations

import dataclasses
import re
from typing import BinaryIO

from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.file_limits import TooLarge, read_at_most
from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.inputs.opening import Refused, open_local
from ecg_common.rejections import ConfigurationError, Reason
from ecg_common.schema import VALID_LABELS

_SEPARATOR = re.compile(r"[\t,;]|\s+")

MAX_LABELS_BYTES = 64 * 2**20
"""A labels line is some 20 bytes, so 64 MB holds about three million records; a larger labels file
is refused unread rather than read into memory."""


@dataclasses.dataclass(frozen=True)
class LabelProblem:
    """One unusable labels line: the record id it names (maybe empty), a reason code and a detail."""

    record_id: str
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Labels:
    """The usable labels plus what was wrong with the rest of the file."""

    by_id: dict[str, int]
    problems: tuple[LabelProblem, ...]

    def problem_for(self, record_id: str) -> LabelProblem | None:
        """The problem that makes `record_id`'s label unusable, if any."""
        return next((p for p in self.problems if p.record_id == record_id), None)


def _split_line(line: str) -> list[str]:
    return [field.strip().strip('"') for field in _SEPARATOR.split(line.strip()) if field.strip()]


def _parse_label(text: str) -> int | None:
    """`0`, `1`, `0.0`, `1.0` are labels; anything else is not (returns None)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in VALID_LABELS else None


def parse_labels(text: str, source: str = "labels") -> Labels:
    """Parses the text of a labels file (see the module docstring for what is tolerated).

    A first line whose label field is not a number is taken as a header. An id given twice with the
    same label is kept; with different labels it becomes an `invalid_label` problem, as does a value
    other than 0/1. Extra columns after the label are ignored.
    """
    text = text.lstrip("\ufeff")
    seen: dict[str, int] = {}
    conflicted: set[str] = set()
    problems: list[LabelProblem] = []
    lines = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        fields = _split_line(line)
        if len(fields) < 2:
            problems.append(LabelProblem(fields[0] if fields else "", Reason.INVALID_LABEL,
                                         f"{source} line {number}: expected 'id<TAB>label', got {line.strip()!r}"))
            continue
        record_id, raw_label = fields[0], fields[1]
        label = _parse_label(raw_label)
        if label is None:
            if number == 1 and not re.fullmatch(r"-?[\d.eE+]+", raw_label):
                continue  # a header line such as "Recording,First_label"
            problems.append(LabelProblem(record_id, Reason.INVALID_LABEL,
                                         f"{source} line {number}: label {raw_label!r} is not 0 or 1"))
            continue
        if record_id in seen and seen[record_id] != label:
            conflicted.add(record_id)
        seen.setdefault(record_id, label)
    for record_id in sorted(conflicted):
        problems.append(LabelProblem(record_id, Reason.INVALID_LABEL,
                                     f"{source}: conflicting labels for {record_id!r}"))
    rejected_ids = {p.record_id for p in problems}
    return Labels({k: v for k, v in seen.items() if k not in rejected_ids}, tuple(problems))


def read_labels(path: str) -> Labels:
    """The labels file at `path` (local or on an object store), parsed; unreadable is a configuration error.

    A local path must resolve to a regular file (a FIFO would block the run, `/dev/zero` would never
    end) and no file may hold more than MAX_LABELS_BYTES; nothing else is read."""
    try:
        data = _read_bounded(path)
    except Refused as refused:
        raise ConfigurationError(f"cannot read labels file {path}: {refused.detail}") from None
    except Exception as error:  # noqa: BLE001 - any failure to read it is a configuration problem
        raise ConfigurationError(f"cannot read labels file {path}: {error}") from None
    return parse_labels(data.decode("utf-8-sig", errors="replace"), source=path)


def _read_bounded(path: str) -> bytes:
    """The file's bytes (decompressed when its name says `.gz` and the like, as Beam does), at most
    MAX_LABELS_BYTES; a local file is opened only if it resolves to a regular file."""
    if not is_local(path):
        with FileSystems.open(path) as handle:
            return _at_most(handle, path)
    compression = CompressionTypes.detect_compression_type(path)
    with open_local(path, MAX_LABELS_BYTES) as raw:
        return _at_most(raw if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression), path)


def _at_most(handle: BinaryIO, path: str) -> bytes:
    try:
        return read_at_most(handle, MAX_LABELS_BYTES, path)
    except TooLarge as error:
        raise Refused(Reason.TOO_LARGE, str(error)) from None
