"""Results appear at `--output_dir` only when complete, and replace nothing but an earlier output of ours.

A run holds the output's lock (`run_lock.py`) from before it creates anything until it is done, and
writes into a hidden sibling staging folder `.NAME.staging-<12 hex digits>` that holds the project's
marker (`output_guard.py`) from its first moment. At the end it writes `_SUCCESS` and renames the
staging folder into place; an earlier output there is first renamed aside (`<staging>.previous`)
and removed after. A killed or failed run leaves the previous output (or nothing) at `--output_dir`.

What a run killed with SIGKILL leaves beside the output (its staging folder, or a `.previous` one)
is removed by the next run to the same output, under the lock, so never a live run's folder, and
only when it is provably ours: named like a staging folder of this output *and* holding the marker
(or empty: a run killed between creating the folder and writing the marker into it). A `.previous`
folder is kept while `--output_dir` does not exist: it is then the only copy of the earlier output.

Object stores have no atomic directory rename, so for non-local paths the run writes in place and
`_SUCCESS`, written last, is what marks the output complete (an earlier one is deleted first).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import uuid

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.runs.interruption import deferred_stop, reached_commit_point
from beam_pipeline.runs.output_guard import (Kind, creating_in, is_earlier_output, read_marker,
                                             refuse_unless_replaceable, write_marker)
from beam_pipeline.runs.run_lock import LockHeld, RunLock, output_lock_path, try_lock_output
from ecg_common.layout import OUTPUT_MARKER, SUCCESS_MARKER

STAGING_INFIX = ".staging-"
PREVIOUS_SUFFIX = ".previous"
_STAGING_ID = "[0-9a-f]{12}"
_log = logging.getLogger(__name__)


def staging_dir_for(output_dir: str, kind: Kind = Kind.OUTPUT) -> str:
    """Creates a fresh folder beside `output_dir` (same file system, so the final rename is atomic)
    holding the marker; on an object store the output itself, with the marker written in place."""
    if not is_local(output_dir):
        write_marker(output_dir, kind)
        return output_dir
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}{STAGING_INFIX}{uuid.uuid4().hex[:12]}")
    os.mkdir(staging)
    write_marker(staging, kind)
    return staging


def publish(staging_dir: str, output_dir: str) -> None:
    """Marks the staged output complete and moves it to `output_dir`, replacing an earlier output of
    ours (checked again here, under the lock); anything else there raises ConfigurationError."""
    with FileSystems.create(FileSystems.join(staging_dir, SUCCESS_MARKER)) as marker:
        marker.write(b"")
    if staging_dir == output_dir:
        reached_commit_point()
        return
    output_dir = os.path.abspath(output_dir)
    if not os.path.lexists(output_dir):
        reached_commit_point()
        os.rename(staging_dir, output_dir)
        return
    refuse_unless_replaceable(output_dir, output_dir)
    previous = f"{staging_dir}{PREVIOUS_SUFFIX}"
    reached_commit_point()
    os.rename(output_dir, previous)
    try:
        os.rename(staging_dir, output_dir)
    except OSError:
        os.rename(previous, output_dir)
        raise
    remove_ours(previous)


def remove_ours(folder: str) -> None:
    """Removes a folder of ours, the marker last: a removal cut short leaves a folder that is still
    recognizably ours, so the next run finishes it."""
    with deferred_stop():
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        for name in names:
            if name != OUTPUT_MARKER:
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    _unlink_quietly(path)
        _unlink_quietly(os.path.join(folder, OUTPUT_MARKER))
        try:
            os.rmdir(folder)
        except OSError as error:
            _log.warning("could not remove %s: %s", folder, error)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        _log.warning("could not remove %s: %s", path, error)


def discard(staging_dir: str, output_dir: str) -> None:
    """Removes a failed run's staging folder (never the published output)."""
    if staging_dir != output_dir:
        remove_ours(staging_dir)


def discard_unpublished(staging_dir: str, output_dir: str) -> None:
    """Removes what a run that publishes nothing wrote: its local staging folder, or on an object store
    (where the output is staged in place) the objects under `output_dir`, a name this run made and
    marked, as long as it holds no `_SUCCESS` (never a published output)."""
    if staging_dir != output_dir:
        remove_ours(staging_dir)
    elif not FileSystems.exists(FileSystems.join(output_dir, SUCCESS_MARKER)):
        FileSystems.delete([output_dir.rstrip("/") + "/"])


def _is_empty_folder(path: str) -> bool:
    try:
        return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)
    except OSError:
        return False


def remove_leftovers(parent: str, output_name: str) -> None:
    """Removes what killed runs left in local `parent` for outputs whose name matches the regular
    expression `output_name`: staging folders (and `.previous` ones) that are provably ours. Call it
    only while holding the lock that every run writing such outputs holds."""
    if not is_local(parent) or not os.path.isdir(parent):
        return
    pattern = re.compile(rf"\.({output_name}){re.escape(STAGING_INFIX)}{_STAGING_ID}({re.escape(PREVIOUS_SUFFIX)})?")
    for entry in sorted(os.listdir(parent)):
        match = pattern.fullmatch(entry)
        if not match:
            continue
        path = os.path.join(parent, entry)
        set_aside = match.group(2) is not None
        if set_aside and not os.path.lexists(os.path.join(parent, match.group(1))):
            _log.warning("kept %s: a run was killed while publishing, after setting the earlier output aside; "
                         "it is the only copy of that output (rename it back, or delete it)", path)
            continue
        ours = is_earlier_output(path) if set_aside else read_marker(path) is not None
        if ours or _is_empty_folder(path):
            _log.info("removing %s, left by a run that did not finish", path)
            remove_ours(path)
        else:
            _log.warning("left %s alone: it is named like a staging folder but has no %s, so it may not be "
                         "ours (delete it yourself if it is)", path, OUTPUT_MARKER)


@dataclasses.dataclass
class OutputClaim:
    """`--output_dir` held by this run: its lock, and the staging folder the run publishes from.

    `output_dir` is the path `output_guard.check_output_dir` returned, `shown` the one the user gave
    (for messages). Create it before the run's `try`, `take` it inside, `close` it in `finally`.
    """

    output_dir: str
    shown: str
    staging: str = ""
    lock: RunLock | None = None
    published: bool = False

    def take(self) -> None:
        """Takes the lock (raising LockHeld when another run has it), checks again under it that the
        output may be replaced, removes what killed runs left beside it and creates the staging folder."""
        with deferred_stop():  # a stop lands once the fields say what exists, for `close`
            with creating_in(self.shown):
                self.lock = try_lock_output(self.output_dir)
            if self.lock is None:
                raise LockHeld(output_lock_path(self.output_dir))
            refuse_unless_replaceable(self.output_dir, self.shown)
            if is_local(self.output_dir):
                parent, name = os.path.split(os.path.abspath(self.output_dir))
                remove_leftovers(parent, re.escape(name))
            with creating_in(self.shown):
                self.staging = staging_dir_for(self.output_dir)
                if not is_local(self.output_dir):  # written in place: an old _SUCCESS would vouch for half an output
                    success = FileSystems.join(self.output_dir, SUCCESS_MARKER)
                    if FileSystems.exists(success):
                        FileSystems.delete([success])

    def publish(self) -> None:
        publish(self.staging, self.output_dir)
        self.published = True

    def close(self) -> None:
        """Removes the staging folder unless it was published, and releases the lock."""
        with deferred_stop():
            if self.staging and not self.published:
                discard(self.staging, self.output_dir)
            if self.lock is not None:
                self.lock.release()
                self.lock = None
