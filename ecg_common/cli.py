"""What every command line of the project shares: strict parsing, exit codes, logging set-up, a quiet
TensorFlow start, turning a failure into one line and an exit code, and ending the process without the
interpreter's slow teardown.

Every command behaves the same way: 0 success, 1 the run failed (one line on stderr saying why), 2
usage or configuration error (one line, no traceback). An option no command knows is a usage error
naming the nearest valid one, never silently ignored: a scheduler must not see success for a run
that dropped a misspelt `--test-dir`. The traceback of an unexpected failure goes to the log, at
debug level unless `--verbose` is given.

Quiet by default: libraries log warnings and errors only, the project's own progress at info level;
`--verbose` shows everything. Commands parse their arguments before importing TensorFlow, tf.Transform
or Beam's runners, so `--help` and usage errors answer at once.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import errno
import gc
import importlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, TypeVar

from ecg_common.rejections import ConfigurationError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DISK_FULL_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded")
"""Beam re-raises a worker's OSError as text inside its own exception, so the errno may survive only as words."""

TF_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "3"
"""TensorFlow's C++ log level without `--verbose`: FATAL only. The GPU build of TensorFlow logs
`E0000 ... cuda_platform.cc:52] failed call to cuInit: ... CUDA error` (an ERROR) the first time it
looks for devices on every machine without an NVIDIA driver; level 2 still shows it, and hiding the
devices (CUDA_VISIBLE_DEVICES=-1) does not stop the call. A failure that matters reaches the command
as a Python exception and is reported in one line; `--verbose` leaves TensorFlow's default (all)."""
LEGACY_KERAS_VARIABLE, LEGACY_KERAS = "TF_USE_LEGACY_KERAS", "1"
"""What tf.Transform sets when it is imported unless it is set already (its `keras_lib`): `tf.keras` is
then tf_keras. Set before TensorFlow's import, TensorFlow does not import Keras 3 first (with pandas
and matplotlib), which a command that loads tf.Transform never uses: ~0.5 s of a pipeline run's start."""

_ABSL_STARTUP_NOISE = re.compile(rb"I\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] "
                                 rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                                 rb"|To enable the following instructions: .* rebuild TensorFlow with")
"""What TensorFlow's shared libraries print while they load: absl INFO lines (oneDNN on, no CUDA driver
found, the CPU instructions it was not built for, with that message's second line) and absl's banner
saying that logging is not initialized yet. Most are written by static initializers before TensorFlow
reads TF_CPP_MIN_LOG_LEVEL, so no setting hides them, and absl reads no environment variable."""


def usage_error(message: str) -> NoReturn:
    """One `error: ...` line and exit 2, as argparse exits (SystemExit) but without its usage block."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def nearest_option(name: str, valid: Sequence[str]) -> str | None:
    """The valid option `name` was most likely meant as: the same with underscores (`--test-dir`,
    `-test_dir`), else the closest spelling."""
    normalized = "--" + name.lstrip("-").replace("-", "_")
    if normalized in valid:
        return normalized
    close = difflib.get_close_matches(normalized, valid, n=1)
    return close[0] if close else None


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions for name in action.option_strings]  # noqa: SLF001


def reject_leftovers(leftovers: Sequence[str], valid: Sequence[str], prog: str) -> None:
    """A usage error about the first argument that no parser took, naming the nearest valid option."""
    if not leftovers:
        return
    first = leftovers[0]
    if not first.startswith("-") or first == "-":
        usage_error(f"unexpected argument {first!r} (see {prog} --help)")
    name = first.split("=", 1)[0]
    suggestion = nearest_option(name, valid)
    usage_error(f"unknown option {name} " + (f"(did you mean {suggestion}?)" if suggestion else f"(see {prog} --help)"))


class CommandLineParser(argparse.ArgumentParser):
    """argparse with the project's usage contract: a mistake is one line on stderr and exit 2, an unknown
    option names the nearest valid one, and abbreviations are not guessed (`--epoch` is not `--epochs`:
    a prefix that is unique today becomes ambiguous, or another option's, when an option is added)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        usage_error(f"{message} (see {self.prog} --help)")

    def leftovers(self, args: Sequence[str] | None) -> list[str]:
        """The arguments none of this parser's options take. Parsed with every option optional, so that a
        misspelt required option is reported as misspelt rather than as missing. `--help` exits here."""
        required = [action for action in self._actions if action.required]
        for action in required:
            action.required = False
        try:
            return super().parse_known_args(args)[1]
        finally:
            for action in required:
                action.required = True

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        """Strict: an argument this parser does not know is a usage error naming the nearest option."""
        reject_leftovers(self.leftovers(args), option_names(self), self.prog)
        return super().parse_args(args, namespace)


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="log debug detail and the libraries' own info messages, with the traceback of a failure")


def configure_logging(package: str, verbose: bool = False) -> None:
    """Warnings from libraries and progress (info) from `package`; with `verbose`, the libraries' info
    messages and `package`'s debug detail as well."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


@contextlib.contextmanager
def _native_startup_lines_hidden() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file while the block runs, then writes it back to stderr
    without the absl start-up lines. Everything else printed meanwhile (Python warnings, log records,
    a traceback) is kept, in order."""
    sys.stderr.flush()
    real_stderr = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(real_stderr, 2)
                captured.seek(0)
                kept = b"".join(line for line in captured.read().splitlines(keepends=True)
                                if not _ABSL_STARTUP_NOISE.match(line))
                with open(real_stderr, "wb", closefd=False) as stderr:
                    stderr.write(kept)
    finally:
        os.close(real_stderr)


def start_tensorflow(verbose: bool = False, legacy_keras: bool = False) -> None:
    """Imports TensorFlow quietly: its C++ log level set first (the one place it is set; a value in the
    environment wins) and the lines its libraries print while loading dropped (see above). Commands call
    it after parsing and before importing anything that imports TensorFlow, which then finds it loaded.
    With `verbose` TensorFlow starts as it would on its own. `legacy_keras` (commands that load
    tf.Transform, never Keras 3): LEGACY_KERAS before the import, unless the environment says otherwise."""
    if legacy_keras:
        os.environ.setdefault(LEGACY_KERAS_VARIABLE, LEGACY_KERAS)
    if not verbose:
        os.environ.setdefault(TF_LOG_LEVEL_VARIABLE, QUIET_TF_LOG_LEVEL)
    with contextlib.nullcontext() if verbose else _native_startup_lines_hidden():
        importlib.import_module("tensorflow")


@contextlib.contextmanager
def libraries_loading() -> Iterator[None]:
    """Around a command's imports of TensorFlow, tf.Transform and Beam (~450,000 objects): no garbage
    collection while they load, then what they allocated moved out of the collector's sight
    (`gc.freeze`). Loading them makes next to no garbage cycles (tens of objects collected), yet each
    full collection walks everything loaded so far: 7 of them took 0.57 s of a pipeline run's 2 s
    start, and the one a run makes later, all threads stopped, 0.24 s (measured; 0.01 s after the freeze).
    Objects still unreachable are freed by reference counting as always; only cycles among what was
    loaded stay, as loaded modules do anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


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
