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
from beam_pipeline.runs.local_runner_overheads import trim_local_overheads

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
    assert trim_local_overheads(options)  # as the runs do: single-element stages as one bundle
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


def test_the_job_finds_every_file_of_a_directory_of_a_hundred_thousand(tmp_path):
    """In-job discovery (graph/sources.py) through the default options: every file listed, paired and
    joined with its label exactly once, at a size where a lossy stage boundary would show."""
    from beam_pipeline.graph.settings import InputSpec
    from beam_pipeline.graph.sources import FindSources

    train, files, headers, wfdb, unlabelled = tmp_path / "TRAIN", 100_000, 1_000, 500, 200
    train.mkdir()
    for index in range(files):
        os.close(os.open(train / f"R{index}.mat", os.O_CREAT | os.O_WRONLY))
    for index in range(headers):
        os.close(os.open(train / f"R{index}.hea", os.O_CREAT | os.O_WRONLY))
    for index in range(wfdb):
        os.close(os.open(train / f"W{index}.hea", os.O_CREAT | os.O_WRONLY))
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"R{i}\t{i % 2}\n" for i in range(files - unlabelled))
                      + "".join(f"GONE{i}\t0\n" for i in range(7)))
    spec = InputSpec({"train": str(train)}, str(labels))
    options = pipeline_options([])
    with beam.Pipeline(options=options) as pipeline:
        found = pipeline | FindSources(spec, token="large")
        _ = (found.by_split["train"]
             | beam.Map(lambda s: f"{s.record_id}\t{s.label}\t{int(s.header_path is not None)}\t"
                                  f"{s.rejection.reason if s.rejection else ''}")
             | "WriteSources" >> beam.io.WriteToText(str(tmp_path / "sources")))
        _ = (found.label_findings | beam.Map(lambda r: f"{r.record_id}\t{r.reason}")
             | "WriteFindings" >> beam.io.WriteToText(str(tmp_path / "findings"), shard_name_template=""))
    rows = []
    for path in glob.glob(str(tmp_path / "sources*")):
        with open(path) as handle:
            rows.extend(line.rstrip("\n").split("\t") for line in handle)
    by_id = {row[0]: row for row in rows}
    assert len(rows) == len(by_id) == files + wfdb
    assert sum(row[2] == "1" for row in rows) == headers
    assert sorted(r for r, *_ in rows if _[2] == "missing_label") == sorted(
        [f"R{i}" for i in range(files - unlabelled, files)] + [f"W{i}" for i in range(wfdb)])
    assert all(by_id[f"R{i}"][1] == str(i % 2) for i in range(0, files - unlabelled, 997))
    assert (tmp_path / "findings").read_text().splitlines() == [f"GONE{i}\tlabel_without_file" for i in range(7)]


def test_reprocessing_selects_every_new_file_of_a_hundred_thousand_once_against_the_ledger(tmp_path):
    """Reprocessing's in-job selection (graph/selection.py) through the default options, at a size where
    a lossy stage boundary would show: of 60,000 listed files the 30,000 the ledger records unchanged
    are left, the 30,000 new ones are selected once each, and the next ledger holds every one of the
    100,000 files exactly once (the 40,000 no longer listed kept as they were)."""
    from ledger_files import Ledger
    from selection_run import BATCH, select

    from beam_pipeline.runs.ledger import FileState

    incoming, listed, recorded, gone = tmp_path / "incoming", 60_000, 30_000, 40_000
    incoming.mkdir()
    states = []
    for index in range(listed):
        path = incoming / f"R{index}.mat"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY))
        if index < recorded:
            states.append(FileState(str(path), 0, os.stat(path).st_mtime, "sha-of-nothing", "batch-1"))
    states += [FileState(str(incoming / f"GONE{i}.mat"), 9, 1.0, "gone", "batch-1") for i in range(gone)]
    ledger = Ledger(("batch-1",), {s.path: s for s in states})
    selection = select(incoming, ledger, root=tmp_path / "root")
    new = {str(incoming / f"R{index}.mat") for index in range(recorded, listed)}
    assert len(selection.sources) == len({s.path for s in selection.sources}) == len(new)
    assert {s.path for s in selection.sources} == new and selection.unchanged == recorded
    assert selection.counts["data_files_found"] == len(new)
    assert {s.path for s in selection.consumed} == new and all(s.batch == BATCH for s in selection.consumed)
    assert selection.counts["ledger_files"] == len(selection.next_ledger.files) == listed + gone
    assert all(selection.next_ledger.files[s.path] == s for s in states if s.path not in new)
    assert selection.next_ledger.batches == ("batch-1", BATCH)
