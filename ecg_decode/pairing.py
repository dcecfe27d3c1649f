"""Which files are records and which `.hea` header goes with a record: the one rule the pipeline's
discovery and the trainer's raw-file scoring share, so a file pairs with the same header either way.

A record is a file whose name ends in `.mat` (any case); its header is the file at the same path with
`.hea` (any case) in place of `.mat`. A `.hea` with no `.mat` beside it is a record too, stored the
WFDB way (its signal files, e.g. `NAME.dat`, are the ones its signal lines name; the decoder child
reads them): its path is the `.hea` and it has no separate header. Either way the id is the stem.
Paths are compared as given, so it works on local paths and on `gs://` names alike.
"""
from __future__ import annotations

from collections.abc import Iterable

MAT_SUFFIX = ".mat"
HEADER_SUFFIX = ".hea"
SIGNAL_SUFFIX = ".dat"
"""The usual name of a WFDB signal file (`NAME.dat`); the header's signal lines say which files a record has."""


def is_record(path: str) -> bool:
    return path.lower().endswith(MAT_SUFFIX)


def is_header(path: str) -> bool:
    return path.lower().endswith(HEADER_SUFFIX)


def is_signal_file(path: str) -> bool:
    return path.lower().endswith(SIGNAL_SUFFIX)


def headers_by_base(paths: Iterable[str]) -> dict[str, str]:
    """The `.hea` files among `paths`, keyed by their path without the suffix (the later of two
    spellings, e.g. `X.hea` and `X.HEA`, wins, as it always has in discovery)."""
    return {path[: -len(HEADER_SUFFIX)]: path for path in paths if is_header(path)}


def header_for(mat_path: str, headers: dict[str, str]) -> str | None:
    """The header of the record at `mat_path` among `headers_by_base(...)`, or None."""
    return headers.get(mat_path[: -len(MAT_SUFFIX)])


def is_wfdb_record(path: str) -> bool:
    """Whether a record's path is a WFDB header standing for its record (`wfdb_records`)."""
    return is_header(path)


def wfdb_records(paths: Iterable[str]) -> list[str]:
    """The `.hea` files among `paths` with no `.mat` record at the same base: WFDB-format records."""
    paths = list(paths)
    mat_bases = {path[: -len(MAT_SUFFIX)] for path in paths if is_record(path)}
    return [path for path in paths if is_header(path) and path[: -len(HEADER_SUFFIX)] not in mat_bases]
