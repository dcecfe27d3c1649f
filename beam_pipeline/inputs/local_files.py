"""Listing a local input directory, and refusing entries that must not be opened.

Beam's local listing follows a symbolic link wherever it points and silently drops one that points
nowhere; and opening a FIFO or a device blocks or never ends. So for a local directory the job lists
every entry that is not a directory itself (regular files, symbolic links, FIFOs, sockets, devices)
and `refusal` decides, before anything is opened, which of them are not input:

- a symbolic link whose target (`os.path.realpath`) lies outside the input directory: `outside_input`,
  never followed (an archive must not make the job read `/etc` or another patient's folder);
- a broken symbolic link, or anything that is not a regular file (FIFO, socket, device): `unreadable`.

Directories reached through a symbolic link are not walked, for the same reason. A directory that
cannot be listed (no permission, a path beyond PATH_MAX, an I/O error) is not skipped: it becomes
an `UnlistableDirectory` entry of the listing, which discovery turns into one rejection
(`unlistable`), so whatever it holds is accounted for by one line instead of vanishing. An entry
that cannot even be examined is listed too (and refused later), never dropped.

This check at listing time gives the clear reasons; whoever opens the file later checks again
(`opening.py`), since the file may have changed in between. Object stores (`gs://`) have none of
these, so remote listings keep going through Beam's `FileSystems`.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator

from apache_beam.io.filesystem import FileMetadata

from ecg_common.rejections import Reason
from ecg_decode.opening import is_inside, kind_of

_log = logging.getLogger(__name__)


class UnlistableDirectory(FileMetadata):
    """A directory under the input that could not be listed, as an entry of the listing: its path,
    why (`detail`), and its own modification time when that can be read (else 0)."""

    def __init__(self, path: str, detail: str, last_updated_in_seconds: float = 0.0):
        super().__init__(path, 0, last_updated_in_seconds)
        self.detail = detail

    @classmethod
    def of(cls, error: OSError) -> UnlistableDirectory:
        """The entry for the directory an `os.walk` error names."""
        path = os.fsdecode(error.filename)
        try:
            mtime = os.lstat(path).st_mtime
        except OSError:
            mtime = 0.0
        return cls(path, f"directory could not be listed: {type(error).__name__}: {error.strerror or error}", mtime)


def is_local(path: str) -> bool:
    """A path on this machine's file system (not `gs://` and the like)."""
    return "://" not in path


def walk(directory: str) -> list[FileMetadata]:
    """Every non-directory entry under `directory` (symbolic links to directories are not entered)
    and every directory that could not be listed (an `UnlistableDirectory`), sorted by path; size
    and time are the target's when it can be reached, else the link's own, else 0."""
    return sorted(entries_under(directory), key=lambda entry: entry.path)


def entries_under(directory: str) -> Iterator[FileMetadata]:
    """The entries of `walk`, as they are found (a listing of a million files need not be held)."""
    unlistable: list[UnlistableDirectory] = []

    def note_unlistable(error: OSError) -> None:
        entry = UnlistableDirectory.of(error)
        _log.warning("%s: %s; what it holds is not read (one `unlistable` rejection)", entry.path, entry.detail)
        unlistable.append(entry)

    for parent, _, names in os.walk(directory, onerror=note_unlistable, followlinks=False):
        yield from unlistable
        unlistable.clear()
        for name in names:
            entry = _entry(os.path.join(parent, name))
            if entry is not None:
                yield entry
    yield from unlistable


def _entry(path: str) -> FileMetadata | None:
    """The listing entry of `path`; None only when it vanished since its directory was read."""
    try:
        info = os.stat(path)
    except OSError:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None  # vanished while listing: it was never there for this run
        except OSError:
            return FileMetadata(path, 0)  # cannot be examined (e.g. beyond PATH_MAX): `refusal` says why
    return FileMetadata(path, info.st_size if stat.S_ISREG(info.st_mode) else 0, info.st_mtime)


def refusal(path: str, root: str) -> tuple[str, str] | None:
    """(reason, detail) when `path`, found under the input directory `root`, must not be opened; else None."""
    return Vetting(root).refusal(path)


class Vetting:
    """`refusal` for the many entries of one input directory `root`, resolving the root and each
    folder once: an entry that is not a symbolic link costs one `lstat` (it resolves to its resolved
    folder joined with its name, and its `lstat` is its `stat`) instead of the ~11 system calls of
    resolving every path whole (45-53 -> 8-9 us a file, 5,000 files; each call also gives up the
    interpreter lock, which the job's other thread holds meanwhile). Not thread-safe: one per listing."""

    def __init__(self, root: str):
        self._real_root = os.path.realpath(root)
        self._real_folders: dict[str, str] = {}

    def refusal(self, path: str) -> tuple[str, str] | None:
        try:
            info = os.lstat(path)
        except OSError as error:
            return Reason.UNREADABLE, f"cannot be examined: {type(error).__name__}: {error}"
        if stat.S_ISLNK(info.st_mode):
            return self._link_refusal(path)
        folder, name = os.path.split(path)
        if (real_folder := self._real_folders.get(folder)) is None:
            real_folder = self._real_folders[folder] = os.path.realpath(folder)
        return self._outside(os.path.join(real_folder, name)) or _not_regular(info.st_mode)

    def _link_refusal(self, path: str) -> tuple[str, str] | None:
        if (outside := self._outside(os.path.realpath(path))) is not None:
            return outside
        try:
            info = os.stat(path)
        except OSError as error:
            return Reason.UNREADABLE, f"broken symbolic link: {type(error).__name__}: {error}"
        return _not_regular(info.st_mode)

    def _outside(self, real: str) -> tuple[str, str] | None:
        if is_inside(real, self._real_root):
            return None
        return (Reason.OUTSIDE_INPUT,
                f"symbolic link to {real}, outside the input directory {self._real_root}; not followed")


def _not_regular(mode: int) -> tuple[str, str] | None:
    if stat.S_ISREG(mode):
        return None
    return Reason.UNREADABLE, f"{kind_of(mode)}, not a regular file; not opened"
