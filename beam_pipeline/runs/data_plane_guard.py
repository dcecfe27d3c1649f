"""A guard around a Beam 2.77 bug that loses elements on the local runner (docs/beam-multithreading-loss.md).

FnApiRunner's `multi_threading` mode runs the SDK workers as threads that talk to the runner over gRPC.
Both ends of that data channel buffer outgoing elements and, besides flushing when a buffer is full,
flush it from a timer thread every `DATA_BUFFER_TIME_LIMIT_MS` (1 s). That timer flush is not safe
against the thread still writing into the buffer: bytes written during a flush are cleared with it.
Measured here: 10^6 integers through Create -> Map -> count lost 0-3,140 elements per run (0.1-0.3%),
also with one worker, and the run exited 0; `in_memory` and `multi_processing` (no such timer) lost none.

The default local mode is `in_memory` (`runner_defaults.py`), which has no such channel. For a run
that asks for `multi_threading` explicitly, setting the limit to 0 makes both ends flush by size only
(and at the end of each bundle); with it, `multi_threading` lost nothing in 4 of 4 runs at 10^6
elements. The constant is private to Beam (pinned at 2.77.0) and read when a runner starts its
workers, so the guard is applied before `pipeline.run()`. It changes nothing for remote runners
(Dataflow, Flink), whose workers are other processes with their own data plane.
"""
from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from beam_pipeline.runs.runner_defaults import LOCAL_RUNNERS

SIZE_BASED_FLUSH_ONLY = 0
"""`DATA_BUFFER_TIME_LIMIT_MS` value that turns the timer flush off on both ends of the data channel."""


class _InMemoryWorkersNote(logging.Filter):
    """Drops FnApiRunner's warning that `in_memory` with several workers has no worker parallelism: in
    Beam 2.77 it runs one bundle thread per worker (measured: two bundles at once for 8.5 s of 9.7 s)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _IN_MEMORY_WARNING not in record.getMessage()


_FN_RUNNER_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner"
_IN_MEMORY_WARNING = "instead of `in_memory` in order for it to have the desired worker parallelism"


def guard_local_data_plane(options: PipelineOptions) -> bool:
    """Turns off the data channel's timer flush for a local `multi_threading` run; True when applied.
    (For `in_memory`, the default, only Beam's misleading warning about its worker threads is dropped.)"""
    if str(options.view_as(StandardOptions).runner) not in LOCAL_RUNNERS:
        return False
    if options.view_as(DirectOptions).direct_running_mode == "in_memory":
        logger = logging.getLogger(_FN_RUNNER_LOGGER)
        if not any(isinstance(f, _InMemoryWorkersNote) for f in logger.filters):
            logger.addFilter(_InMemoryWorkersNote())
        return False
    if options.view_as(DirectOptions).direct_running_mode != "multi_threading":
        return False
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = SIZE_BASED_FLUSH_ONLY
    return True
