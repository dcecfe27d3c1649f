"""Listing a local input directory, and refusing entries that must not be opened.

Beam's local listing follows a symbolic link wherever it points and silently drops one that points
nowhere; and opening a FIFO or a device blocks or never ends. So for a local directory the job lists
every entry that is not a directory itself (regular files, symbolic links, FIFOs, sockets, devices)
and `refusal` decides, before anything is opened, which of them are not input:

- a symbolic link whose target (`os.path.realpath`) lies outside the input directory: `outside_input`,
  never followed (an archive must not make the job read `/etc` or another patient's folder);
- a broken symbolic link, or anything that is not a regular file (FIFO, socket, device): `unreadable`.

Directories reached through a symbolic link are not walked, for the same reason. Object stores
(`gs://`) have none of these, so remote listings keep going through Beam's `FileSystems`.
"""
from __future__ import annotations

import os
import stat

from apache_beam.io.filesystem import FileMetadata

from ecg_common.rejections import Reason

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def is_local(path: str) -> bool:
    """A path on this machine's file system (not `gs://` and the like)."""
    return "://" not in path


def walk(directory: str) -> list[FileMetadata]:
    """Every non-directory entry under `directory` (symbolic links to directories are not entered),
    sorted by path; size and time are the target's when it can be reached, else the link's own."""
    entries = []
    for parent, _, names in os.walk(directory, followlinks=False):
        for name in names:
            path = os.path.join(parent, name)
            try:
                info = os.stat(path)
            except OSError:
                try:
                    info = os.lstat(path)
                except OSError:
                    continue  # vanished while listing: it was never there for this run
            entries.append(FileMetadata(path, info.st_size if stat.S_ISREG(info.st_mode) else 0, info.st_mtime))
    return sorted(entries, key=lambda entry: entry.path)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def refusal(path: str, root: str) -> tuple[str, str] | None:
    """(reason, detail) when `path`, found under the input directory `root`, must not be opened; else None."""
    real_root = os.path.realpath(root)
    try:
        is_link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as error:
        return Reason.UNREADABLE, f"cannot be examined: {type(error).__name__}: {error}"
    real = os.path.realpath(path)
    if not _inside(real, real_root):
        return Reason.OUTSIDE_INPUT, f"symbolic link to {real}, outside the input directory {real_root}; not followed"
    try:
        info = os.stat(path)
    except OSError as error:
        what = "broken symbolic link" if is_link else "cannot be examined"
        return Reason.UNREADABLE, f"{what}: {type(error).__name__}: {error}"
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        return Reason.UNREADABLE, f"{kind}, not a regular file; not opened"
    return None
