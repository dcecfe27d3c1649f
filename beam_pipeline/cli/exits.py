"""The outcomes both pipeline commands add to `ecg_common.cli`'s 0, 1 and 2, each with its one line:

  75     another run holds the output's lock (EX_TEMPFAIL: nothing done, try again later)
  128+N  signal N stopped the run cleanly (143 SIGTERM, 130 SIGINT, the shell's convention): its
         staging and temporary folders were removed, nothing was published
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from beam_pipeline.runs.interruption import Stopped, stop_received, stopping_on_signals
from ecg_common.cli import run_reporting_errors

EXIT_LOCKED = 75
T = TypeVar("T")


class _LockedOut(BaseException):
    """Carries LockHeld past `run_reporting_errors`, which would report it as a failure (exit 1)."""


def _outcomes_first(work: Callable[[], T]) -> Callable[[], T]:
    """`work`, with a held lock and a stop taken out of the failures: a failure that a stop signal
    caused (Beam may wrap the exception the signal raised) is the stop."""
    def run() -> T:
        # Imported here: run_lock loads Beam's file systems, and the commands import this module before
        # parsing (--help answers without Beam).
        from beam_pipeline.runs.run_lock import LockHeld

        try:
            return work()
        except LockHeld as held:
            raise _LockedOut(held) from None
        except Exception as error:
            stop = stop_received()
            if stop is not None:
                raise stop from error
            raise
    return run


def run_stoppable(work: Callable[[], T], package: str, output: str) -> tuple[int, T | None]:
    """`run_reporting_errors` for a run that SIGTERM or SIGINT may stop and that may find the lock of
    `output` held: (exit code, result or None), the one line already printed on stderr."""
    try:
        with stopping_on_signals():
            return run_reporting_errors(_outcomes_first(work), package)
    except Stopped as stop:
        print(f"error: stopped by {stop.signal_name}: nothing was published, {output} is as it was; "
              "the run's staging and temporary folders were removed", file=sys.stderr)
        return stop.exit_code, None
    except _LockedOut as locked:
        print(f"error: {locked.args[0]}", file=sys.stderr)
        return EXIT_LOCKED, None
