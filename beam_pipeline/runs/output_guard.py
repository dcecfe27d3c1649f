"""What a run may write over: the checks made before anything is created or moved.

The main command replaces `--output_dir` whole, so only a folder that is provably an earlier output
of this project is ever replaced:

- one holding the marker `_ECG_PIPELINE_OUTPUT`, a small JSON file
  `{"written_by": "ecg-beam-pipeline", "format": 1, "kind": "output"}` that every run writes into its
  staging folder before anything else, so it travels with the output when that is published;
- one published by a version from before the marker: `_SUCCESS`, `transform_fn/saved_model.pb` and a
  `run_summary.json` with the summary's own fields, all three together. A folder of someone else's
  could hold one of these names, hardly all three with our summary inside.

Anything else (a regular file, an empty folder, a folder of documents, a reprocessing root) is
refused with one line (exit 2) and left untouched, and so is an `--output_dir` equal to, inside or
above an input (`--train_dir`, `--test_dir`, `--labels`): replacing it would delete the input.
An empty folder is refused too: nothing proves it is ours, it may be a mount point or a folder
prepared with its own permissions, and the cost of refusing is one `rmdir`.

Reprocessing never replaces its ROOT, it adds batches into it, but it writes a ledger and a lock
there and removes what killed runs left: ROOT must not exist yet, be empty, or be recognizably a
reprocessing root (the marker with `"kind": "reprocess_root"`, written with the first batch; a
ledger of ours; or nothing but the names of ROOT's layout, as a root of an older version holds).
It must not overlap `--incoming`, `--transform_dir` or `--labels` either.

Paths on an object store (`gs://`) are checked the same way through Beam `FileSystems`: a prefix
with no object under it does not exist, and the marker is an object.
"""
from __future__ import annotations

import contextlib
import enum
import fnmatch
import json
import os
import posixpath
import stat
from collections.abc import Iterator, Mapping

import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.runs.ledger import LEDGER_FILE, LEDGER_FORMAT
from beam_pipeline.runs.run_lock import LOCK_FILE
from ecg_common.layout import OUTPUT_MARKER, SUCCESS_MARKER, SUMMARY_FILE
from ecg_common.rejections import ConfigurationError

PROJECT = "ecg-beam-pipeline"
MARKER_FORMAT = 1
_SUMMARY_FIELDS = ("files_found", "examples_written", "reconciled")
"""Fields every `run_summary.json` of this project has had: with `_SUCCESS` and the transform graph,
the proof that a folder without the marker is an output of an older version."""
_MAX_MARKER_BYTES = 4096
_MAX_SUMMARY_BYTES = 64 * 2**20


class Kind(str, enum.Enum):
    """What a folder holding the marker is."""

    OUTPUT = "output"
    """an output of the main command (or its staging folder)"""
    BATCH = "batch"
    """a reprocessing batch (or its staging folder)"""
    REPROCESS_ROOT = "reprocess_root"


_KIND_NAMES = {Kind.OUTPUT: "an output of the main command", Kind.BATCH: "a reprocessing batch folder",
               Kind.REPROCESS_ROOT: "a reprocessing root (--output_root)"}


# --- the marker ------------------------------------------------------------------------------------

def write_marker(directory: str, kind: Kind) -> None:
    content = {"written_by": PROJECT, "format": MARKER_FORMAT, "kind": kind.value}
    with FileSystems.create(FileSystems.join(directory, OUTPUT_MARKER)) as handle:
        handle.write(json.dumps(content).encode("utf-8"))


def _is_regular_file(path: str) -> bool:
    """Locally: a regular file, not a symbolic link, FIFO or device (which could block or lead elsewhere)."""
    if not is_local(path):
        return FileSystems.exists(path)
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_small(path: str, limit: int) -> bytes | None:
    """The file's content if it is a regular file of at most `limit` bytes, else None."""
    if not _is_regular_file(path):
        return None
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read(limit + 1)
    except OSError:  # Beam's BeamIOError included
        return None
    return data if len(data) <= limit else None


def _read_json(path: str, limit: int) -> dict | None:
    data = _read_small(path, limit)
    try:
        content = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return content if isinstance(content, dict) else None


def read_marker(directory: str) -> Kind | None:
    """The kind the folder's marker names, or None when it has no marker of this project."""
    content = _read_json(FileSystems.join(directory, OUTPUT_MARKER), _MAX_MARKER_BYTES)
    if not content or content.get("written_by") != PROJECT:
        return None
    try:
        return Kind(content.get("kind"))
    except ValueError:
        return None


def _has_legacy_output_layout(directory: str) -> bool:
    if not (_is_regular_file(FileSystems.join(directory, SUCCESS_MARKER))
            and _is_regular_file(FileSystems.join(directory, tft.TFTransformOutput.TRANSFORM_FN_DIR,
                                                   tf.saved_model.SAVED_MODEL_FILENAME_PB))):
        return False
    summary = _read_json(FileSystems.join(directory, SUMMARY_FILE), _MAX_SUMMARY_BYTES)
    return summary is not None and all(field in summary for field in _SUMMARY_FIELDS)


def is_earlier_output(directory: str) -> bool:
    """True when `directory` is provably an output of the main command: ours to replace."""
    kind = read_marker(directory)
    return kind is Kind.OUTPUT or (kind is None and _has_legacy_output_layout(directory))


# --- what exists at a path ---------------------------------------------------------------------------

def _names_under(path: str, limit: int | None = None) -> list[str] | None:
    """The entries of a local folder, or the first path components of the objects under a prefix;
    None when nothing is there. A local path that is not a folder raises NotADirectoryError."""
    if is_local(path):
        if not os.path.lexists(path):
            return None
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotADirectoryError(path)
        return sorted(os.listdir(path))
    prefix = path.rstrip("/") + "/"
    found = FileSystems.match([prefix + "**"], limits=[limit] if limit else None)[0].metadata_list
    if not found:
        return None
    return sorted({m.path[len(prefix):].split("/", 1)[0] for m in found if m.path.startswith(prefix)})


def _resolved(path: str) -> str:
    return os.path.realpath(path) if is_local(path) else path.rstrip("/")


def _inside(path: str, folder: str) -> bool:
    """`path` is `folder` or below it (both resolved, on the same kind of file system)."""
    if is_local(path) != is_local(folder):
        return False
    if is_local(path):
        return os.path.commonpath([path, folder]) == folder
    return path == folder or path.startswith(folder + "/")


def _refuse_overlap(option: str, shown: str, target: str, inputs: Mapping[str, str | None]) -> None:
    for input_option, given in inputs.items():
        if not given:
            continue
        source = _resolved(given)
        if target == source:
            raise ConfigurationError(f"{option} {shown} is {input_option} itself: the output must be a path of "
                                     "its own, outside every input")
        if _inside(target, source):
            raise ConfigurationError(f"{option} {shown} is inside {input_option} {given}: the output must be "
                                     "a path of its own, outside every input")
        if _inside(source, target):
            raise ConfigurationError(f"{option} {shown} contains {input_option} {given}: the output must be "
                                     "a path of its own, outside every input")


@contextlib.contextmanager
def creating_in(shown: str) -> Iterator[None]:
    """Turns a failure to create the lock or the staging folder into the one line that says why
    (a read-only or full file system, no permission), before any work was done."""
    try:
        yield
    except OSError as error:
        raise ConfigurationError(f"cannot write to {shown}: {error.strerror or error}") from error


# --- the main command's --output_dir -------------------------------------------------------------------

def refuse_unless_replaceable(target: str, shown: str) -> None:
    """Raises ConfigurationError unless `target` does not exist or is an earlier output of ours."""
    try:
        names = _names_under(target, limit=1)
    except NotADirectoryError:
        raise ConfigurationError(f"--output_dir {shown} exists and is not a folder; nothing was changed: name a "
                                 "path that does not exist, or an earlier output") from None
    if names is None or is_earlier_output(target):
        return
    kind = read_marker(target)
    advice = "name a path that does not exist, or an earlier output"
    if kind is not None:
        what = f"is {_KIND_NAMES[kind]}, not an output of the main command"
    elif not names:
        what, advice = "is an empty folder, not an earlier output of this pipeline", f"remove it, or {advice}"
    else:
        what = f"exists and is not an earlier output of this pipeline (it has no {OUTPUT_MARKER} marker)"
    raise ConfigurationError(f"--output_dir {shown} {what}; nothing was changed: {advice}")


def check_output_dir(output_dir: str, inputs: Mapping[str, str | None]) -> str:
    """The path the run publishes at (symbolic links resolved), once it is known that publishing there
    destroys nothing but an earlier output of ours. `inputs` maps option names to the paths given."""
    target = _resolved(output_dir)
    _refuse_overlap("--output_dir", output_dir, target, inputs)
    refuse_unless_replaceable(target, output_dir)
    return target


# --- reprocessing's --output_root ---------------------------------------------------------------------

def _root_layout_names(batch_prefix: str) -> tuple[str, ...]:
    """Glob patterns of everything reprocessing puts in ROOT (see reprocess_job.py)."""
    return (LOCK_FILE, LEDGER_FILE, OUTPUT_MARKER, f"{batch_prefix}*", f".{batch_prefix}*.staging-*",
            f".{LEDGER_FILE}.tmp-*")


def _has_our_ledger(root: str) -> bool:
    data = _read_small(FileSystems.join(root, LEDGER_FILE), _MAX_SUMMARY_BYTES)
    if data is None:
        return False
    try:
        header = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return False
    return isinstance(header, dict) and header.get("format") == LEDGER_FORMAT


def check_output_root(root: str, inputs: Mapping[str, str | None], batch_prefix: str) -> None:
    """Raises ConfigurationError unless ROOT is new, empty or a reprocessing root, outside the inputs."""
    target = _resolved(root)
    _refuse_overlap("--output_root", root, target, inputs)
    kind = read_marker(target)
    if kind is Kind.REPROCESS_ROOT or (kind is None and _has_our_ledger(target)):
        return
    if kind is not None:
        raise ConfigurationError(f"--output_root {root} is {_KIND_NAMES[kind]}, not a reprocessing root; "
                                 "nothing was changed")
    try:
        names = _names_under(target)
    except NotADirectoryError:
        raise ConfigurationError(f"--output_root {root} exists and is not a folder; nothing was changed") from None
    patterns = _root_layout_names(batch_prefix)
    strangers = [n for n in names or () if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if strangers:
        raise ConfigurationError(f"--output_root {root} is a folder that is not a reprocessing root (it holds "
                                 f"{posixpath.join(root, strangers[0])}); nothing was changed: name a new or "
                                 "empty folder, or an earlier --output_root")
