"""Parsing of the labels file (`reference.txt` and its cousins) into record id -> 0/1.

Label files are edited by hand and in spreadsheets, so the parser accepts a tab, comma, semicolon or
spaces between id and label, a header line, a UTF-8 BOM, CRLF line ends and blank lines. Lines it
cannot use are not fatal: each comes back as a problem with its line number, a reason code and what
was wrong, the records they name are rejected later with that reason instead of being trained on with
a guessed label, and `problem_summary` counts them for the log and for the message of a run that
cannot start.

A header is recognized by its words, never by failing to parse: the first non-blank line is a header
when its first field is one of `ID_HEADER_WORDS` and its second one of `LABEL_HEADER_WORDS`
(case-insensitive; spaces and dashes count as `_`). So `Recording,First_label,Second_label` is a
header, while `ID<TAB>True` is a data line whose label is not 0 or 1.

Multi-label files (`multi_label`, implied by `--classes` and `--multi_label`): every field after the id
is a class name or code, so `A0001<TAB>164889003,59118001`, `A0001<TAB>AF;RBBB` and the CPSC 2018
`REFERENCE.csv` with all its label columns read alike; an id given twice must list the same set.

Files of class names or numbers (the CPSC 2018 `REFERENCE.csv`: classes 1-9, 1 = Normal) are read as
binary with `normal_labels`: the values listed mean normal, every other value abnormal. Only the
first label column counts; further columns (`Second_label`, `Third_label`, comments) are ignored.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import BinaryIO

from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.inputs.option_names import NORMAL_LABELS_OPTION
from ecg_common.rejections import ConfigurationError, Reason
from ecg_common.schema import ABNORMAL, CLASS_NAMES, CLASSES_KNOWN, NORMAL, VALID_LABELS
from ecg_decode.file_limits import TooLarge, read_at_most
from ecg_decode.opening import Refused, open_local

_SEPARATOR = re.compile(r"\s*[,;]\s*|\s+")
"""A comma or semicolon separates one field from the next (`A1,,x` has an empty second field); a run of
tabs or spaces is one separator, so columns aligned by hand still parse."""

ID_HEADER_WORDS = frozenset({"recording", "record", "record_id", "id", "filename", "file_name", "file", "name",
                             "patient", "patient_id"})
LABEL_HEADER_WORDS = frozenset({"label", "labels", "class", "first_label", "target", "diagnosis", "dx", "y"})
"""The words that make the first non-blank line a header (first field, second field); listed in
docs/labels-file.md."""

_EXAMPLES_SHOWN = 3
_log = logging.getLogger(__name__)


class Unusable:
    """What is wrong with an unusable line, in the words of the summary (their reason is `invalid_label`)."""

    NO_LABEL = "without a label"
    NO_ID = "without a record id"
    NOT_BINARY = "with a label that is not 0 or 1"
    CONFLICT = "giving an id conflicting labels"

MAX_LABELS_BYTES = 64 * 2**20
"""A labels line is some 20 bytes, so 64 MB holds about three million records; a larger labels file
is refused unread rather than read into memory."""


@dataclasses.dataclass(frozen=True)
class LabelProblem:
    """One unusable labels line: the record id it names (maybe empty), a reason code and a detail.

    `line` is its 1-based line number in the file (0 for a problem that is not about one line, such as
    a record without any label), `kind` one of `Unusable` and `value` the field shown in a summary.
    """

    record_id: str
    reason: str
    detail: str
    line: int = 0
    kind: str = ""
    value: str = ""


@dataclasses.dataclass(frozen=True)
class Labels:
    """The usable labels plus what was wrong with the rest of the file.

    `mapped` says class values were mapped to 0/1 (`normal_labels`); then `read_as` holds each value
    seen in the label column -> (the label it was read as, how many lines).
    """

    by_id: dict[str, int]
    problems: tuple[LabelProblem, ...]
    read_as: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    mapped: bool = False
    codes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Multi-label files: each usable id -> its class names or codes as written (`by_id` says CLASSES_KNOWN)."""

    def problem_for(self, record_id: str) -> LabelProblem | None:
        """The problem that makes `record_id`'s label unusable, if any (its first line's)."""
        return next((p for p in self.problems if p.record_id == record_id), None)

    def problem_summary(self) -> str:
        """The unusable lines counted by what is wrong with them, with a few examples each, e.g.
        `12 unusable lines: 12 with a label that is not 0 or 1 ('AF', 'I-AVB', 'Normal', ...)`;
        empty when every line could be used."""
        if not self.problems:
            return ""
        by_kind: dict[str, list[LabelProblem]] = collections.defaultdict(list)
        for problem in self.problems:
            by_kind[problem.kind].append(problem)
        parts = [f"{len(found)} {kind}{_examples(p.value for p in found)}"
                 for kind, found in sorted(by_kind.items(), key=lambda item: -len(item[1]))]
        summary = f"{_count(len(self.problems), 'unusable line')}: {', '.join(parts)}"
        if Unusable.NOT_BINARY in by_kind and not self.mapped:
            summary += f"; for class names or numbers (e.g. CPSC REFERENCE.csv) see {NORMAL_LABELS_OPTION}"
        return summary

    def problem_note(self) -> str:
        """`problem_summary` as the tail of a one-line message (`; 12 unusable lines: ...`), or ''."""
        return f"; {self.problem_summary()}" if self.problems else ""

    def describe_mapping(self) -> str:
        """How class values were read, e.g. `normal: '1' (1 line); abnormal: '3' (3 lines), '8' (2 lines)`."""
        groups = []
        for label in VALID_LABELS:
            values = [f"{value!r} ({_count(lines, 'line')})" for value, (read, lines) in self.read_as.items()
                      if read == label]
            groups.append(f"{CLASS_NAMES[label]}: {', '.join(values) or 'none'}")
        return "; ".join(groups)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _examples(values: Iterable[str]) -> str:
    distinct = list(dict.fromkeys(v for v in values if v))
    if not distinct:
        return ""
    shown = ", ".join(repr(v) for v in distinct[:_EXAMPLES_SHOWN])
    return f" ({shown}{', ...' if len(distinct) > _EXAMPLES_SHOWN else ''})"


def _physical_lines(text: str) -> list[str]:
    """The file's lines as an editor numbers them (LF, CRLF or CR ends; no other character ends a line)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _split_line(line: str) -> list[str]:
    return [field.strip().strip('"').strip() for field in _SEPARATOR.split(line.strip())]


def _header_word(field: str) -> str:
    return re.sub(r"[\s-]+", "_", field.casefold())


def _is_header(fields: list[str]) -> bool:
    """Whether the fields of the first non-blank line are header words (see the module docstring)."""
    return (len(fields) >= 2 and _header_word(fields[0]) in ID_HEADER_WORDS
            and _header_word(fields[1]) in LABEL_HEADER_WORDS)


def _binary_label(text: str) -> int | None:
    """`0`, `1`, `0.0`, `1.0` are labels; anything else is not (returns None)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in VALID_LABELS else None


def _class_key(text: str) -> str:
    """How a class value is compared with `normal_labels`: numbers by value (`1` = `1.0`), names
    case-insensitively (`Normal` = `normal`)."""
    try:
        value = float(text)
    except ValueError:
        return text.casefold()
    return repr(value) if math.isfinite(value) else text.casefold()


def _mapped_label(normal_keys: frozenset[str]) -> Callable[[str], int]:
    return lambda text: NORMAL if _class_key(text) in normal_keys else ABNORMAL


def _line_problem(fields: list[str], line: str, where: str, number: int) -> LabelProblem | None:
    """The problem of a line that has no id or no label, if it has one."""
    if len(fields) < 2 or not fields[1]:
        return LabelProblem(fields[0], Reason.INVALID_LABEL, f"{where}: expected 'id<TAB>label', got {line.strip()!r}",
                            number, Unusable.NO_LABEL, fields[0])
    if not fields[0]:
        return LabelProblem("", Reason.INVALID_LABEL, f"{where}: no record id before the label {fields[1]!r}",
                            number, Unusable.NO_ID)
    return None


def parse_labels(text: str, source: str = "labels", normal_labels: Collection[str] = (),
                 multi_label: bool = False) -> Labels:
    """Parses the text of a labels file (see the module docstring for what is tolerated).

    Without `normal_labels` a label is 0 or 1; with them the label column holds class values, those
    listed read as 0 and every other one as 1. An id given twice with the same label is kept; with
    different labels each of its lines becomes an `invalid_label` problem, as does a line without an id
    or a label, or (binary) with a value other than 0/1. Extra columns after the label are ignored,
    except in a `multi_label` file, where every field after the id is one of the record's classes.
    """
    if multi_label:
        return _parse_multi_labels(text, source)
    to_label = _mapped_label(frozenset(_class_key(v) for v in normal_labels)) if normal_labels else _binary_label
    usable: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)  # id -> (line, label, value)
    problems: list[LabelProblem] = []
    header_possible = True
    for number, line in enumerate(_physical_lines(text.lstrip("\ufeff")), start=1):
        if not line.strip():
            continue
        fields = _split_line(line)
        if header_possible:
            header_possible = False
            if _is_header(fields):
                continue
        where = f"{source} line {number}"
        if (problem := _line_problem(fields, line, where, number)) is not None:
            problems.append(problem)
            continue
        record_id, value = fields[0], fields[1]
        label = to_label(value)
        if label is None:
            problems.append(LabelProblem(record_id, Reason.INVALID_LABEL, f"{where}: label {value!r} is not 0 or 1",
                                         number, Unusable.NOT_BINARY, value))
            continue
        usable[record_id].append((number, label, value))
    problems += _conflicts(usable, source)
    problems.sort(key=lambda p: p.line)
    rejected_ids = {p.record_id for p in problems}
    by_id = {rid: entries[0][1] for rid, entries in usable.items() if rid not in rejected_ids}
    return Labels(by_id, tuple(problems), _read_as(usable) if normal_labels else {}, bool(normal_labels))


def _parse_multi_labels(text: str, source: str) -> Labels:
    """`parse_labels` for a multi-label file: id -> the set of class names or codes after it."""
    usable: dict[str, list[tuple[int, frozenset, str]]] = collections.defaultdict(list)
    tokens_of: dict[str, tuple[str, ...]] = {}
    problems: list[LabelProblem] = []
    lines = [(n, line) for n, line in enumerate(_physical_lines(text.lstrip("\ufeff")), start=1) if line.strip()]
    for index, (number, line) in enumerate(lines):
        fields = _split_line(line)
        if index == 0 and _is_header(fields):
            continue
        fields = [fields[0], *(f for f in fields[1:] if f)]
        if (problem := _line_problem(fields, line, f"{source} line {number}", number)) is not None:
            problems.append(problem)
            continue
        tokens = tuple(dict.fromkeys(fields[1:]))
        tokens_of.setdefault(fields[0], tokens)
        usable[fields[0]].append((number, frozenset(tokens), ",".join(tokens)))
    problems += _conflicts(usable, source)
    problems.sort(key=lambda p: p.line)
    rejected_ids = {p.record_id for p in problems}
    kept = [rid for rid in usable if rid not in rejected_ids]
    return Labels({rid: CLASSES_KNOWN for rid in kept}, tuple(problems), codes={rid: tokens_of[rid] for rid in kept})


def _conflicts(usable: dict[str, list[tuple[int, int, str]]], source: str) -> list[LabelProblem]:
    """One problem per line of an id whose lines give it different labels."""
    problems = []
    for record_id, entries in usable.items():
        if len({label for _, label, _ in entries}) < 2:
            continue
        given = ", ".join(f"{value!r} on line {number}" for number, _, value in entries)
        problems += [LabelProblem(record_id, Reason.INVALID_LABEL,
                                  f"{source} line {number}: conflicting labels for {record_id!r}: {given}",
                                  number, Unusable.CONFLICT, record_id) for number, _, _ in entries]
    return problems


def _read_as(usable: dict[str, list[tuple[int, int, str]]]) -> dict[str, tuple[int, int]]:
    """Each class value of a usable line -> (the label it was read as, its lines), in value order."""
    lines: collections.Counter[tuple[str, int]] = collections.Counter(
        (value, label) for entries in usable.values() for _, label, value in entries)
    ordered = sorted(lines.items(), key=lambda item: _class_key(item[0][0]))
    return {value: (label, count) for (value, label), count in ordered}


def read_labels(path: str, normal_labels: Collection[str] = (), multi_label: bool = False) -> Labels:
    """The labels file at `path` (local or on an object store), parsed; unreadable is a configuration error.

    Unusable lines are summarized in one warning (each is also a finding in `errors/labels.jsonl`), and
    how class values were read with `normal_labels` in one info line, so an inverted mapping shows.
    A local path must resolve to a regular file (a FIFO would block the run, `/dev/zero` would never
    end) and no file may hold more than MAX_LABELS_BYTES; nothing else is read.
    """
    with _unreadable_is_configuration(path):
        data = _read_bounded(path)
    labels = parse_labels(data.decode("utf-8-sig", errors="replace"), source=path, normal_labels=normal_labels,
                          multi_label=multi_label)
    if labels.problems:
        _log.warning("labels file %s: %s", path, labels.problem_summary())
    if labels.mapped:
        _log.info("labels file %s, class values read as %s", path, labels.describe_mapping())
    return labels


def check_readable(path: str) -> None:
    """Raises ConfigurationError now, before a job starts, when the labels file cannot be read at all
    (the job itself reads and parses it, `graph/sources.py`): missing, not a regular file, too large."""
    with _unreadable_is_configuration(path):
        if not is_local(path):
            if not FileSystems.exists(path):
                raise FileNotFoundError(f"no such file: {path}")
            return
        with open_local(path, MAX_LABELS_BYTES) as raw:
            raw.read(1)


@contextlib.contextmanager
def _unreadable_is_configuration(path: str) -> Iterator[None]:
    """Any failure to read the labels file, as the ConfigurationError that names it."""
    try:
        yield
    except Refused as refused:
        raise ConfigurationError(f"cannot read labels file {path}: {refused.detail}") from None
    except Exception as error:  # noqa: BLE001 - any failure to read it is a configuration problem
        raise ConfigurationError(f"cannot read labels file {path}: {error}") from None


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
