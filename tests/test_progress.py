"""The progress line of a pass: files done of files found, the rate and the time left."""
from beam_pipeline.graph import progress
from beam_pipeline.graph.progress import ProgressKey, describe

KEY = ProgressKey("token", "train", "analyze")


def test_the_line_gives_done_of_found_the_rate_and_the_time_left():
    assert describe(KEY, 1, 5000, 0.0) == "analyze train: 1 of 5000 files"
    assert describe(KEY, 1201, 5000, 5.0) == "analyze train: 1201 of 5000 files (240.0 files/s, 16 s left)"


def test_without_the_total_it_gives_done_and_rate():
    assert describe(KEY, 101, 0, 2.0) == "analyze train: 101 files (50.0 files/s)"


def test_files_found_are_tallied_per_run_and_split():
    progress.note_found("run-a", "train", 3)
    progress.note_found("run-a", "test")
    progress.note_found("run-b", "train")
    assert (progress.found("run-a", "train"), progress.found("run-a", "test"), progress.found("run-b", "train")) == (3, 1, 1)
