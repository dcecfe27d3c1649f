"""One run at a time per output: an exclusive `flock` on a lock file.

Reprocessing locks `ROOT/.lock`; the main command locks `.NAME.lock` beside its `--output_dir` (the
output folder itself is replaced by a rename at the end, so a lock inside it would move with it).
Two runs started at once (a slow night overlapping the next cron tick, a manual run beside the
scheduled one) would otherwise both publish, and the last one would silently win. `flock` is
released by the kernel when the holder exits, however it exits (kill -9 included), so there is no
stale lock to clean up. Object stores have no such lock: for a `gs://` output the run proceeds
unlocked and the scheduler must keep runs from overlapping (docs/reprocessing.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os

from beam_pipeline.inputs.local_files import is_local

LOCK_FILE = ".lock"
_OUTPUT_LOCK_SUFFIX = ".lock"
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunLock:
    """A held lock (or, for an object-store root, the record that none could be taken)."""

    path: str
    _fd: int | None = None
    _remove_on_release: bool = False

    def release(self) -> None:
        if self._fd is not None:
            if self._remove_on_release:  # removed while still held: see try_lock_file
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class LockHeld(Exception):
    """Another run holds the lock at `path`: this run did nothing (exit 75)."""

    def __init__(self, path: str):
        super().__init__(held_message(path))
        self.path = path


def _warn_unlocked(location: str) -> None:
    _log.warning("%s is on an object store, which has no file lock: make sure the scheduler never starts "
                 "two runs at once (Kubernetes concurrencyPolicy: Forbid, Airflow max_active_runs=1)", location)


def try_lock(root: str) -> RunLock | None:
    """Takes the reprocessing root's lock `ROOT/.lock` without waiting; None when another run holds it."""
    if not is_local(root):
        _warn_unlocked(root)
        return RunLock(root)
    os.makedirs(root, exist_ok=True)
    return try_lock_file(os.path.join(root, LOCK_FILE))


def output_lock_path(output_dir: str) -> str:
    """`.NAME.lock` beside `output_dir` (a local, absolute path)."""
    parent, name = os.path.split(os.path.abspath(output_dir))
    return os.path.join(parent, f".{name}{_OUTPUT_LOCK_SUFFIX}")


def try_lock_output(output_dir: str) -> RunLock | None:
    """Takes the lock of the main command's `output_dir` without waiting; None when another run holds it.
    The lock file is removed again on release, so nothing stays beside the output."""
    if not is_local(output_dir):
        _warn_unlocked(output_dir)
        return RunLock(output_dir)
    os.makedirs(os.path.dirname(os.path.abspath(output_dir)), exist_ok=True)
    return try_lock_file(output_lock_path(output_dir), remove_on_release=True)


def try_lock_file(path: str, remove_on_release: bool = False) -> RunLock | None:
    """Locks `path` (created if missing) without waiting; None when another run holds it.

    The holder's pid is written into the file only as a hint for the message a second run prints;
    the lock itself is the flock, not the file's content or existence. A holder that removes the file
    on release does so while it still holds the lock; a run that opened the file just before and got
    the lock just after then holds a file no longer at `path`, sees that, and locks the new one.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _still_at(fd, path):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(path, fd, remove_on_release)


def _still_at(fd: int, path: str) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _pid_hint(lock_path: str) -> str:
    try:
        with open(lock_path, encoding="utf-8") as handle:
            pid = handle.read().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid else ""


def holder_hint(root: str) -> str:
    """The pid the current holder of `ROOT/.lock` wrote, for the 'another run holds the lock' message."""
    return _pid_hint(os.path.join(root, LOCK_FILE))


def held_message(lock_path: str) -> str:
    """The one line a run prints when it finds `lock_path` held, naming the holder when it can."""
    return f"another run holds the lock on {lock_path}{_pid_hint(lock_path)}; nothing done"
