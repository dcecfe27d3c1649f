"""One reprocessing run at a time per output root: an exclusive `flock` on `ROOT/.lock`.

Two runs started at once (a slow night overlapping the next cron tick, a manual run beside the
scheduled one) would otherwise both see the same files as new and publish them twice. `flock` is
released by the kernel when the holder exits, however it exits (kill -9 included), so there is no
stale lock to clean up. Object stores have no such lock: for a `gs://` root the run proceeds
unlocked and the scheduler must keep runs from overlapping (docs/reprocessing.md).
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os

from beam_pipeline.inputs.local_files import is_local

LOCK_FILE = ".lock"
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunLock:
    """A held lock (or, for an object-store root, the record that none could be taken)."""

    path: str
    _fd: int | None = None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def try_lock(root: str) -> RunLock | None:
    """Takes the root's lock without waiting; None when another run holds it.

    The holder's pid is written into the lock file only as a hint for the message a second run
    prints; the lock itself is the flock, not the file's content or existence.
    """
    if not is_local(root):
        _log.warning("%s is on an object store, which has no file lock: make sure the scheduler never starts "
                     "two runs at once (Kubernetes concurrencyPolicy: Forbid, Airflow max_active_runs=1)", root)
        return RunLock(root)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(path, fd)


def holder_hint(root: str) -> str:
    """The pid the current holder wrote, for the 'another run holds the lock' message."""
    try:
        with open(os.path.join(root, LOCK_FILE), encoding="utf-8") as handle:
            pid = handle.read().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid else ""
