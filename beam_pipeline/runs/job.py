"""One run of the job: labels and file discovery, the two Beam passes, the summary, publication.

This is the only place that knows the order of things; `graph/pipeline.py` holds the Beam graphs and
`cli/main_command.py` the command line. Broken configuration raises `ConfigurationError`; bad records never do.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time

import apache_beam as beam
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from beam_pipeline.graph import demographics
from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph.arrow_batches import raw_schema
from beam_pipeline.graph.statistics import require_finite_statistics
from beam_pipeline.inputs.classes import read_classes
from beam_pipeline.graph.settings import InputSpec
from beam_pipeline.graph.sources import (ACCEPTED_COUNTER, FOUND_COUNTER, LABEL_FINDINGS_COUNTER, candidates_file,
                                         read_candidates)
from beam_pipeline.inputs.discovery import check_input_directory
from beam_pipeline.inputs.labels import Labels, check_readable, read_labels
from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.report import build as run_report
from beam_pipeline.runs.beam_runner import (counter, describe_runner, dry_run_summary, is_dry_run, pipeline_options,
                                            tft_temp_dir)
from beam_pipeline.runs.classes import class_summary, learn_classes, write_classes
from beam_pipeline.runs.data_plane_guard import guard_local_data_plane
from beam_pipeline.runs.interruption import deferred_stop
from beam_pipeline.runs.outcome import DEFAULT_MAX_ERROR_RATE
from beam_pipeline.runs.output_guard import check_output_dir
from beam_pipeline.runs.publish import OutputClaim
from beam_pipeline.runs.summary import binary_class_balance, check_reconciled, cpu_seconds, passes, summarize
from ecg_common.layout import (DEFAULT_SAMPLING_RATE_KEY, GEOMETRY_KEY, PAD_SHORT_KEY, RAW_METADATA_DIR,
                               SUMMARY_CLASSES_KEY, SUMMARY_DECODING_KEY, SUMMARY_FILE, WINDOW_STRIDE_KEY)
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


def _no_valid_training_record(config: JobConfig, found: int) -> ConfigurationError:
    """The error of a run whose training files were all rejected before decoding (no label, refused,
    duplicates). Only then is the labels file read here, to say what was wrong with it."""
    labels = (read_labels(config.labels_path, config.normal_labels, config.decode.labelling.multi_label)
              if config.labels_path else Labels({}, ()))
    return ConfigurationError(f"no training record with a valid label: {found} .mat files in {config.train_dir}, "
                              f"{len(labels.by_id)} usable labels in {config.labels_path}{labels.problem_note()}")


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
        with tft_beam.Context(temp_dir=tft_temp):
            pipeline = beam.Pipeline(options=options)
            graphs.build_job(pipeline, inputs, decode_options, staging, config.write, candidates_file(tft_temp))
            beam_started, cpu_started = time.monotonic(), cpu_seconds()
            result = pipeline.run()
            result.wait_until_finish()
            if is_dry_run(options):
                _log.info("dry run: the job was built, not submitted")
                return dry_run_summary(result, runner)
            beam_cost = passes(time.monotonic() - beam_started, cpu_seconds() - cpu_started)
            _log.info("both passes done after %.1f s: %.1f s in Beam, %.2f cores busy", time.time() - started,
                      beam_cost["wall_s"], beam_cost["cores_busy"])
        metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema(decode_options.geometry,
                                                                               labelling.multi_label)),
                                   FileSystems.join(staging, RAW_METADATA_DIR))
        splits = list(inputs.directories)
        found = {split: counter(result, f"{split}{FOUND_COUNTER}") for split in splits}
        if counter(result, f"{TRAIN_SPLIT}{ACCEPTED_COUNTER}") == 0:
            raise _no_valid_training_record(config, found[TRAIN_SPLIT])
        _log.info("files found: %s", found)
        written = {split: counter(result, f"{split}_examples_written") for split in splits}
        records_written = {split: counter(result, f"{split}_records_written") for split in splits}
        if written[TRAIN_SPLIT] == 0:  # the statistics were learned from nothing: publish none of it
            kept = " and pass the quality flags (--reject_flagged)" if decode_options.reject_flagged else ""
            kept += " with the '# Dx:' codes of their headers (--dx_from_header)" if labelling.from_header else ""
            raise ConfigurationError(f"none of the training files in {config.train_dir} could be decoded{kept}")
        summary = summarize(found, staging, written, runner, started, max_error_rate=config.max_error_rate,
                            label_findings=counter(result, LABEL_FINDINGS_COUNTER), geometry=decode_options.geometry,
                            records_written=records_written,
                            class_balance=binary_class_balance(lambda name: counter(result, name), splits))
        if labelling.multi_label:
            write_classes(staging, classes)
            summary[SUMMARY_CLASSES_KEY], summary["class_balance"] = class_summary(result, classes, splits)
        check_reconciled(summary)
        # Non-finite statistics would make every example constant: publish none of it.
        require_finite_statistics(summary["lead_statistics"]["mean_mv"], summary["lead_statistics"]["std_mv"],
                                  decode_options.geometry.lead_names)
        summary["beam_passes"] = beam_cost
        summary["demographics"] = {split: demographics.summarize(lambda name: counter(result, name), split)
                                   for split in splits}
        summary[SUMMARY_DECODING_KEY] = {DEFAULT_SAMPLING_RATE_KEY: decode_options.default_sampling_rate,
                                         PAD_SHORT_KEY: decode_options.pad_short,
                                         GEOMETRY_KEY: decode_options.geometry.to_json(),
                                         WINDOW_STRIDE_KEY: decode_options.window_stride_s}
        # Drawn before publishing, so the report is part of the atomic output; a failure is recorded, not raised.
        summary["report"] = run_report.build_safely(staging, summary, read_candidates(candidates_file(tft_temp)),
                                                    decode_options.default_sampling_rate, decode_options.pad_short)
        with FileSystems.create(FileSystems.join(staging, SUMMARY_FILE)) as handle:
            handle.write(json.dumps(summary, indent=2).encode("utf-8"))
        claim.publish()
    finally:
        with deferred_stop():
            claim.close()  # the staging folder unless published, and the lock
            if tft_temp is not None and is_local(tft_temp):
                shutil.rmtree(tft_temp, ignore_errors=True)
            if pipeline is not None:  # Beam removes its own only when run() ends; a stop can come before
                shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    return summary
