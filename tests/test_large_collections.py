"""The default local running options do not lose elements of a large collection, nor does an explicit
`multi_threading` run with the guard (Beam 2.77's multi_threading data plane does without it:
docs/beam-multithreading-loss.md).

A million elements go through the options a run gets and are counted twice, by a combine and by the
lines written; both must be exact. Unguarded `multi_threading` lost elements in about half the runs
at this size (0.1-0.5% of them), so each test is a real check; the figures of repeated runs are in
the doc.
"""
from __future__ import annotations

import glob
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.transforms.combiners import CountCombineFn

from beam_pipeline.runs.beam_runner import pipeline_options
from beam_pipeline.runs.data_plane_guard import guard_local_data_plane

N = 1_000_000


def _round_trip(options, folder) -> None:
    with beam.Pipeline(options=options) as pipeline:
        values = pipeline | beam.Create(range(N)) | beam.Map(str)
        _ = (values | beam.CombineGlobally(CountCombineFn())
             | "WriteCount" >> beam.io.WriteToText(str(folder / "count"), shard_name_template=""))
        _ = values | "WriteLines" >> beam.io.WriteToText(str(folder / "lines"))
    assert int((folder / "count").read_text()) == N
    seen = []
    for path in glob.glob(os.path.join(folder, "lines*")):
        with open(path) as handle:
            seen.extend(int(line) for line in handle)
    assert len(seen) == N and set(seen) == set(range(N))


def test_a_million_elements_survive_the_default_local_options(tmp_path):
    options = pipeline_options([])
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert options.view_as(DirectOptions).direct_num_workers == (os.cpu_count() or 1)
    guard_local_data_plane(options)  # as the runs do (a no-op for in_memory)
    _round_trip(options, tmp_path)


def test_a_million_elements_survive_multi_threading_with_the_guard(tmp_path):
    options = pipeline_options(["--direct_running_mode=multi_threading"])
    assert guard_local_data_plane(options)
    _round_trip(options, tmp_path)


def test_the_guard_leaves_remote_runners_and_other_modes_alone():
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    before = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    assert not guard_local_data_plane(pipeline_options(["--runner=DataflowRunner"]))
    assert not guard_local_data_plane(pipeline_options(["--direct_running_mode=multi_processing"]))
    assert not guard_local_data_plane(pipeline_options([]))  # in_memory: no data channel to guard
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == before
