"""What every command line of the project shares: exit codes, logging set-up, turning a failure into
one line and an exit code, and ending the process without the interpreter's slow teardown.

The pipeline's two commands and the trainer's three behave the same way: 0 success, 1 the run failed
(one line on stderr saying why), 2 usage or configuration error (one line, no traceback). The
traceback of an unexpected failure goes to the log, at debug level unless `--verbose` is given.
"""
from __future__ import annotations

import argparse
import atexit
import errno
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from ecg_common.rejections import ConfigurationError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DISK_FULL_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded")
"""Beam re-raises a worker's OSError as text inside its own exception, so the errno may survive only as words."""


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="log debug detail, with the traceback of a failure")


def configure_logging(package: str, verbose: bool = False) -> None:
    """Warnings from libraries, progress (info) from `package`, debug detail with `verbose`."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def _disk_full(error: BaseException | None) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _innermost_reason(text: str) -> str:
    """The line that says what went wrong: Beam re-raises a worker's exception as a RuntimeError whose
    text is the worker's whole traceback, so its last `Type: message` line is the reason, not the first."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Traceback"):
        return lines[0] if lines else ""
    reasons = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b.*:", line)]
    return reasons[-1] if reasons else lines[-1]


def describe_failure(error: BaseException) -> str:
    """One line saying why a run failed; a full disk is named as such (the traceback is logged)."""
    if _disk_full(error):
        return ("run failed: the disk is full (no space left, or a file size limit hit) while writing; "
                "nothing was published and the staging folder was removed")
    reason = _innermost_reason(str(error))
    if reason != (str(error).splitlines() or [""])[0]:
        return f"run failed: {reason}"
    return f"run failed: {type(error).__name__}: {reason}"


def run_reporting_errors(run: Callable[[], T], package: str) -> tuple[int, T | None]:
    """Runs `run`; a failure becomes its exit code and one line on stderr (the traceback goes to the
    log of `package`, at debug level).

    Returns (EXIT_OK, result), (EXIT_CONFIG, None) for broken configuration or (EXIT_FAILED, None).
    """
    try:
        return EXIT_OK, run()
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG, None
    except Exception as error:  # noqa: BLE001 - the one-line reason; the traceback is in the debug log
        logging.getLogger(package).debug("run failed", exc_info=True)
        print(f"error: {describe_failure(error)}", file=sys.stderr)
        return EXIT_FAILED, None


def run_command(work: Callable[[], int], package: str, verbose: bool = False) -> int:
    """Sets up logging, runs `work` and returns its exit code, or that of its failure (see above)."""
    configure_logging(package, verbose)
    code, result = run_reporting_errors(work, package)
    return code if result is None else result


def exit_now(code: int) -> NoReturn:
    """Runs the atexit hooks (they stop the decoder children and flush what libraries buffer), flushes
    logging and the standard streams, and ends the process with `code`.

    What it skips is CPython's teardown of every imported module and object, which with TensorFlow,
    tf.Transform and Beam loaded takes ~1.4 s (measured at 5,000 records: 8% of the run) and writes
    nothing. Call it only from a `__main__` block, after the command returned its exit code.
    """
    atexit._run_exitfuncs()  # noqa: SLF001 - the interpreter's own hook runner, as at a normal exit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
