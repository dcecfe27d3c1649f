"""Opening one local input file for reading: never blocking, never leaving the input tree, never
reading more than a limit. The decoder child, the reprocessing hasher and the labels reader open
local files only through here.

Checking a path when the directory is listed (`local_files.refusal`) is not enough: the decoder
opens it later, and by then the file may have been replaced by a symbolic link out of the tree,
a FIFO (opening it blocks until a writer comes) or a device (`/dev/zero` never ends). So at the
moment of opening:

1. the path is resolved (`os.path.realpath`) and must lie under the input root, when one is given;
2. the resolved path must be a regular file (`lstat`: nothing else is ever opened) within the limit;
3. it is opened with `O_NOFOLLOW` (a link that appeared since step 1 is not followed) and
   `O_NONBLOCK` (so even a FIFO swapped in after step 2 cannot block the open);
4. the opened descriptor must still be a regular file within the limit (`fstat`), and what it
   names (`/proc/self/fd/N`, on Linux) must still lie under the root: this closes the window in
   which a directory on the way was replaced by a link.

Refusals are `Refused(reason, detail)` with the reason codes of the listing: `outside_input`,
`unreadable`, `too_large`. Beam-free, so the decoder child does not import Beam.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from beam_pipeline.inputs.file_limits import TooLarge, read_at_most
from ecg_common.rejections import Reason

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FD_PATH = "/proc/self/fd/{}"


class Refused(Exception):
    """A local input file that was not opened (or not read whole): a reason code and a detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a character device", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def is_inside(path: str, root: str) -> bool:
    """Whether the resolved `path` lies under the resolved directory `root` (or is it)."""
    return os.path.commonpath([path, root]) == root


def _outside(real: str, real_root: str) -> Refused:
    return Refused(Reason.OUTSIDE_INPUT,
                   f"symbolic link to {real}, outside the input directory {real_root}; not followed")


def _check_regular(info: os.stat_result, limit: int, path: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise Refused(Reason.UNREADABLE, f"{kind_of(info.st_mode)}, not a regular file; not opened")
    if info.st_size > limit:  # worded as `read_at_most` says it, whichever notices
        raise Refused(Reason.TOO_LARGE, f"{path} holds more than {limit} bytes")


def _opened_path(fd: int) -> str | None:
    """The path the kernel holds for `fd` (None where /proc is not there to say)."""
    try:
        return os.readlink(_FD_PATH.format(fd))
    except OSError:
        return None


def _open_checked(path: str, limit: int, root: str | None) -> int:
    """A read-only descriptor of the regular file `path` resolves to, after steps 1-4 above."""
    real = os.path.realpath(path)
    real_root = os.path.realpath(root) if root is not None else None
    if real_root is not None and not is_inside(real, real_root):
        raise _outside(real, real_root)
    try:
        _check_regular(os.lstat(real), limit, path)
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Refused(Reason.UNREADABLE, "became a symbolic link while being opened; not followed") from None
        raise Refused(Reason.UNREADABLE, f"{type(error).__name__}: {error}") from None
    try:
        _check_regular(os.fstat(fd), limit, path)
        opened = _opened_path(fd)
        if real_root is not None and opened is not None and not is_inside(opened, real_root):
            raise _outside(opened, real_root)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def open_local(path: str, limit: int, root: str | None = None) -> Iterator[BinaryIO]:
    """The regular file `path` resolves to, open for reading (see the module docstring); raises
    Refused when it must not be opened. `root`: the input directory it must stay under, if any.
    Reading more than `limit` bytes from it is the caller's to refuse (the file may grow)."""
    with os.fdopen(_open_checked(path, limit, root), "rb") as handle:
        yield handle


def read_local(path: str, limit: int, root: str | None = None) -> bytes:
    """The whole content of the regular file `path` resolves to, at most `limit` bytes; else Refused."""
    try:
        with open_local(path, limit, root) as handle:
            return read_at_most(handle, limit, path)
    except TooLarge as error:
        raise Refused(Reason.TOO_LARGE, str(error)) from None
    except OSError as error:  # a read error after opening (EIO, a vanished network mount)
        raise Refused(Reason.UNREADABLE, f"{type(error).__name__}: {error}") from None
