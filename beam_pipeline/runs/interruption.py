"""Stopping a run cleanly on SIGTERM (a scheduler's timeout, `kill`, `docker stop`) or SIGINT (Ctrl-C).

Python's default ends the process on SIGTERM at once, like SIGKILL: the staging folder and
tf.Transform's temporary folder stay behind. While `stopping_on_signals` is active, the first of
these signals raises `Stopped` in the main thread instead; the `finally` blocks of the run remove
what it created, and the command says so in one line and exits with the shell's convention 128+N
(143 for SIGTERM, 130 for SIGINT). With the local runners, Beam's own `finally` waits for the bundles
in flight before the exception leaves `pipeline.run()`, so nothing writes into the staging folder
while it is removed.

Two moments must not be cut short: the clean-up itself (`deferred_stop`: the signal takes effect when
the block ends) and publishing. Once a run reaches its commit point (`reached_commit_point`, right
before the rename that publishes), a stop is only recorded: the run completes, since its output is
already, or about to be, in place whole. A second signal while stopping is ignored, so it cannot cut
the clean-up short either; SIGKILL still ends the process at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_log = logging.getLogger(__name__)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived (a KeyboardInterrupt, so `except Exception` clauses let it through)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclasses.dataclass
class _State:
    received: int | None = None
    raised: bool = False
    deferring: int = 0
    committed: bool = False


_state = _State()


def _raise_pending() -> None:
    if _state.received is not None and not _state.raised and not _state.committed and not _state.deferring:
        _state.raised = True
        raise Stopped(_state.received)


def _on_signal(signum: int, _frame) -> None:
    if _state.received is not None:  # ignored: the clean-up after the first one is running
        return
    _state.received = signum
    if _state.committed:
        _log.warning("%s arrived while the run was publishing: it completes", signal.Signals(signum).name)
    _raise_pending()


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Stopped` in the block (signals can only be handled in the main thread;
    elsewhere the block runs with the handlers it has)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _state
    _state = _State()
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_received() -> Stopped | None:
    """The stop that reached this run, if one did (whatever became of the exception it raised)."""
    return Stopped(_state.received) if _state.received is not None else None


def stop_came_after_commit() -> bool:
    return _state.received is not None and _state.committed


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """A block a stop must not cut short (removing a folder); the stop takes effect when it ends."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    _raise_pending()


def reached_commit_point() -> None:
    """From here on the run completes: a stop arriving now is recorded, not raised."""
    _state.committed = True
