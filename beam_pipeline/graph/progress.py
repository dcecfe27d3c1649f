"""Progress of a local run in its log: files done of files found, rate and time left, per pass and split.

Beam makes several copies of a DoFn (per thread, per bundle), and the step that counts the files
found (`sources.py`) is not the step that decodes them, so both reach one process-wide tally through
a token the graph hands to both. The files of a split are all found before the first is decoded (a
GroupByKey lies between the two), so the total is known once decoding starts; on a runner whose
workers are other processes (multi_processing, Dataflow) a worker sees its own share only, and the
line then gives files done and rate without a total (Dataflow's own monitoring shows the job's
counters: `<split>_files_found`, `records_decoded`, `records_rejected`).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time

PROGRESS_INTERVAL_S = 5.0
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ProgressKey:
    """Which tally a step adds to: the run's token (one per built job), the split and the pass."""

    token: str
    split: str
    pass_name: str


class _Tally:
    def __init__(self) -> None:
        self.done = 0
        self.started = self.last_log = time.monotonic()


_lock = threading.Lock()
_found: collections.Counter[tuple[str, str]] = collections.Counter()
_tallies: dict[ProgressKey, _Tally] = {}


def note_found(token: str, split: str, count: int = 1) -> None:
    """`count` more files of `split` found in the run with `token`."""
    with _lock:
        _found[(token, split)] += count


def found(token: str, split: str) -> int:
    with _lock:
        return _found[(token, split)]


def file_done(key: ProgressKey) -> None:
    """One more file of `key`'s split through `key`'s pass (written or rejected); logs at most every
    PROGRESS_INTERVAL_S, and once when the last file found is done."""
    with _lock:
        tally = _tallies.setdefault(key, _Tally())
        tally.done += 1
        now, total = time.monotonic(), _found[(key.token, key.split)]
        if now - tally.last_log < PROGRESS_INTERVAL_S and tally.done != total:
            return
        tally.last_log = now
        _log.info("%s", describe(key, tally.done, total, now - tally.started))  # under the lock: lines in order


def describe(key: ProgressKey, done: int, total: int, elapsed_s: float) -> str:
    """e.g. `analyze train: 1200 of 5000 files (240.0 files/s, 16 s left)`, the rate over the files done
    since the first (`elapsed_s` ago); without a total (files found in another process)
    `analyze train: 1200 files (240.0 files/s)`."""
    of_total = f" of {total}" if total >= done else ""
    if done < 2 or elapsed_s <= 0:
        return f"{key.pass_name} {key.split}: {done}{of_total} files"
    rate = (done - 1) / elapsed_s
    left = f", {(total - done) / rate:.0f} s left" if of_total else ""
    return f"{key.pass_name} {key.split}: {done}{of_total} files ({rate:.1f} files/s{left})"
