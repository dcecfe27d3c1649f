"""One run of the job: the configuration checks, the Beam job (which finds its files and labels
itself, then makes both passes), the summary and publication (`finishing.py`: here after the job,
or inside it with --publish_in_job).

This is the only place that knows the order of things; `graph/pipeline.py` holds the Beam graphs and
`cli/main_command.py` the command line. Broken configuration raises `ConfigurationError`; bad records never do.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time

import apache_beam as beam
import tensorflow_transform.beam as tft_beam

from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph.settings import InputSpec
from beam_pipeline.graph.sources import candidates_file, read_candidates
from beam_pipeline.inputs.classes import read_classes
from beam_pipeline.inputs.discovery import check_input_directory
from beam_pipeline.inputs.labels import check_readable
from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.runs.beam_runner import (counters_with_prefix, describe_runner, dry_run_summary, is_dry_run,
                                            pipeline_options, returns_at_submission, tft_temp_dir)
from beam_pipeline.runs.classes import learn_classes
from beam_pipeline.runs.data_plane_guard import guard_local_data_plane
from beam_pipeline.runs.finishing import Finisher, RunInputs
from beam_pipeline.runs.interruption import deferred_stop
from beam_pipeline.runs.local_runner_overheads import trim_local_overheads
from beam_pipeline.runs.outcome import DEFAULT_MAX_ERROR_RATE
from beam_pipeline.runs.output_guard import check_output_dir
from beam_pipeline.runs.publish import OutputClaim
from beam_pipeline.runs.summary import cpu_seconds, passes, read_summary
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import TEST_SPLIT, TRAIN_SPLIT
from ecg_decode.decoding.windows import stride_problem

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The project's own options (Beam's options travel separately, untouched)."""

    train_dir: str
    labels_path: str | None
    """None only with --dx_from_header (the classes are in the headers)."""
    output_dir: str
    test_dir: str | None = None
    decode: graphs.DecodeOptions = graphs.DecodeOptions()
    write: graphs.WriteOptions = graphs.WriteOptions()
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    normal_labels: tuple[str, ...] = ()
    """Class values of the labels file that mean normal (every other value abnormal); empty: labels are 0/1."""
    classes_path: str | None = None
    """Multi-label runs: the --classes file; None learns the classes over the training split."""
    publish_in_job: bool = False
    """--publish_in_job: the job's last step writes the summary and publishes (`runs/finishing.py`);
    the launcher does nothing after submission."""


def input_spec(config: JobConfig) -> InputSpec:
    """What the job is told to find its records with (it lists the directories and reads the labels itself)."""
    directories = {TRAIN_SPLIT: config.train_dir} | ({TEST_SPLIT: config.test_dir} if config.test_dir else {})
    labelling = config.decode.labelling
    return InputSpec(directories, config.labels_path, config.normal_labels, labelling.multi_label,
                     labelling.from_header)


def check_inputs(config: JobConfig) -> None:
    """Broken configuration that shows without listing anything: a missing or unlistable input
    directory, a labels file that cannot be opened. ConfigurationError before anything is created."""
    check_input_directory(config.train_dir)
    if config.test_dir:
        check_input_directory(config.test_dir)
    if config.labels_path:
        check_readable(config.labels_path)


def _run_inputs(config: JobConfig) -> RunInputs:
    return RunInputs(config.train_dir, config.labels_path, config.normal_labels,
                     tuple(input_spec(config).directories), config.max_error_rate)


def _inputs(config: JobConfig) -> dict[str, str | None]:
    return {"--train_dir": config.train_dir, "--test_dir": config.test_dir, "--labels": config.labels_path,
            "--classes": config.classes_path}


def run_job(config: JobConfig, beam_args: list[str]) -> dict:
    """Runs both passes and publishes `config.output_dir`; returns the run summary. Raises
    ConfigurationError before anything is created when the output may not be written there, and
    run_lock.LockHeld when another run holds the output's lock."""
    started = time.time()
    if (problem := config.decode.geometry.problem()) is not None:
        raise ConfigurationError(f"--target_rate_hz/--window_s/--leads: {problem}")
    if (problem := stride_problem(config.decode.geometry, config.decode.window_stride_s)) is not None:
        raise ConfigurationError(f"--window_stride_s: {problem}")
    output_dir = check_output_dir(config.output_dir, _inputs(config))
    check_inputs(config)
    labelling = config.decode.labelling
    classes = read_classes(config.classes_path) if config.classes_path else None
    inputs = input_spec(config)
    options = pipeline_options(beam_args)
    guard_local_data_plane(options)  # before the runner starts its workers
    trim_local_overheads(options)  # before the graph is built
    runner = describe_runner(options)
    decode_options = config.decode
    claim, tft_temp, pipeline = OutputClaim(output_dir, config.output_dir), None, None
    try:
        claim.take()  # the output's lock, what killed runs left removed, a fresh staging folder
        with deferred_stop():  # a stop lands after the assignment, inside `try`
            staging, tft_temp = claim.staging, tft_temp_dir(options)
        _log.info("running on %s; the input files are listed inside the job", runner)
        if labelling.multi_label:
            if classes is None and is_dry_run(options):
                raise ConfigurationError("a dry run cannot learn the classes: give them with --classes")
            classes = classes or learn_classes(options, inputs, decode_options, tft_temp)
            _log.info("%d classes: %s", len(classes.names), ", ".join(classes.names))
            decode_options = dataclasses.replace(decode_options,
                                                 labelling=dataclasses.replace(labelling, classes=classes))
        finisher = Finisher(_run_inputs(config), decode_options, classes, staging, output_dir, runner, started)
        in_job = finisher if config.publish_in_job else None
        with tft_beam.Context(temp_dir=tft_temp):
            pipeline = beam.Pipeline(options=options)
            graphs.build_job(pipeline, inputs, decode_options, staging, config.write,
                             None if in_job else candidates_file(tft_temp), finish=in_job)
            beam_started, cpu_started = time.monotonic(), cpu_seconds()
            result = pipeline.run()
            if in_job is not None and not is_dry_run(options) and returns_at_submission(options):
                claim.published = True  # handed over: the job publishes; nothing of it may be removed here
                _log.info("submitted; the job publishes %s itself when it is done", config.output_dir)
                return {"submitted": True, "runner": runner}
            result.wait_until_finish()
            if is_dry_run(options):
                _log.info("dry run: the job was built, not submitted")
                return dry_run_summary(result, runner)
            if in_job is not None:  # a local runner: the job has published already
                claim.published = True
                return read_summary(output_dir)  # what the job's last step wrote
            beam_cost = passes(time.monotonic() - beam_started, cpu_seconds() - cpu_started)
            _log.info("both passes done after %.1f s: %.1f s in Beam, %.2f cores busy", time.time() - started,
                      beam_cost["wall_s"], beam_cost["cores_busy"])
        summary = finisher.summary(counters_with_prefix(result, ""), read_candidates(candidates_file(tft_temp)),
                                   beam_cost)
        claim.publish()
    finally:
        with deferred_stop():
            claim.close()  # the staging folder unless published, and the lock
            if tft_temp is not None and is_local(tft_temp):
                shutil.rmtree(tft_temp, ignore_errors=True)
            if pipeline is not None:  # Beam removes its own only when run() ends; a stop can come before
                shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    return summary
