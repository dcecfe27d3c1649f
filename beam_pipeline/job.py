"""One run of the job: labels and file discovery, the two Beam passes, the summary, publication.

This is the only place that knows the order of things; `pipeline.py` holds the Beam graphs and
`cli.py` the command line. Broken configuration raises `ConfigurationError`; bad records never do.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import resource
import shutil
import tempfile
import time
import uuid

import apache_beam as beam
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions,
                                                  TestOptions)
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from beam_pipeline import pipeline as graphs
from beam_pipeline.arrow_batches import raw_schema
from beam_pipeline.discovery import RecordSource, find_records, label_file_findings
from beam_pipeline.isolation import decoder_cpu_seconds
from beam_pipeline.labels import Labels, parse_labels
from beam_pipeline.outcome import DEFAULT_MAX_ERROR_RATE, error_rates, splits_over_budget
from beam_pipeline import quality
from beam_pipeline import report as run_report
from beam_pipeline.publish import discard, is_local, publish, staging_dir_for
from beam_pipeline.read import METRICS_NAMESPACE
from beam_pipeline.rejections import ConfigurationError
from beam_pipeline.schema import LEAD_NAMES, NUM_SAMPLES, SAMPLING_RATE_HZ, TEST_SPLIT, TRAIN_SPLIT
from beam_pipeline.statistics import lead_statistics
from beam_pipeline.written import class_balance, written_sources

DEFAULT_RUNNER = "FnApiRunner"
"""Beam 2.77's DirectRunner first tries to download the Prism binary, which cannot work offline."""

RAW_METADATA_DIR = "metadata"
SUMMARY_FILE = "run_summary.json"
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The project's own options (Beam's options travel separately, untouched)."""

    train_dir: str
    labels_path: str
    output_dir: str
    test_dir: str | None = None
    decode: graphs.DecodeOptions = graphs.DecodeOptions(SAMPLING_RATE_HZ, pad_short=False, batch_size=32)
    write: graphs.WriteOptions = graphs.WriteOptions()
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE


LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
DEFAULT_LOCAL_RUNNING_MODE = "multi_threading"
"""Measured fastest on 2 cores (README, Performance): zlib and TensorFlow release the GIL, so threads
use both cores, while multi_processing pays for moving record batches between processes."""


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options as given, with the measured-fastest local defaults for what was not given:
    FnApiRunner, `multi_threading` with one worker per core."""
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = DEFAULT_RUNNER
    given = " ".join(beam_args)
    if str(standard.runner) in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in given:
            direct.direct_running_mode = DEFAULT_LOCAL_RUNNING_MODE
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = os.cpu_count() or 1
    return options


def describe_runner(options: PipelineOptions) -> str:
    runner = str(options.view_as(StandardOptions).runner)
    if runner in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        return f"{runner} ({direct.direct_running_mode}, {direct.direct_num_workers} workers)"
    return runner


def is_dry_run(options: PipelineOptions) -> bool:
    """`--dry_run=True`: DataflowRunner builds and validates the whole job but does not submit it."""
    return bool(options.view_as(TestOptions).dry_run)


def dry_run_summary(result, runner: str) -> dict:
    """What a dry run can report: the names of the job's top-level steps (when the runner kept the job)."""
    job = getattr(result, "job", None)
    transforms = job.proto_pipeline.components.transforms.values() if job is not None else []
    steps = sorted(t.unique_name for t in transforms if t.unique_name and "/" not in t.unique_name)
    return {"dry_run": True, "runner": runner, "steps": steps}


def read_labels(path: str) -> Labels:
    try:
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8-sig", errors="replace")
    except Exception as error:  # noqa: BLE001 - any failure to read it is a configuration problem
        raise ConfigurationError(f"cannot read labels file {path}: {error}") from None
    return parse_labels(text, source=path)


def discover(config: JobConfig, labels: Labels) -> dict[str, list[RecordSource]]:
    splits = {TRAIN_SPLIT: find_records(config.train_dir, TRAIN_SPLIT, labels)}
    if config.test_dir:
        splits[TEST_SPLIT] = find_records(config.test_dir, TEST_SPLIT, labels)
    if not any(source.rejection is None for source in splits[TRAIN_SPLIT]):
        found = len(splits[TRAIN_SPLIT])
        raise ConfigurationError(f"no training record with a valid label: {found} .mat files in {config.train_dir}, "
                                 f"{len(labels.by_id)} usable labels in {config.labels_path}")
    return splits


def counter(result, name: str) -> int:
    """A counter of this job's metrics namespace, summed over steps."""
    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["counters"]
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in counters)


def tft_temp_dir(options: PipelineOptions) -> str:
    """tf.Transform's scratch space: under --temp_location when given (it must be shared with remote
    workers), else a local temporary folder. Never inside the output directory. A dry run keeps it
    local: tf.Transform creates it while the graph is built, and a dry run must work offline."""
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location and not is_dry_run(options):
        return FileSystems.join(temp_location, f"tft-{uuid.uuid4().hex[:12]}")
    return tempfile.mkdtemp(prefix="ecg-tft-")


def _rejection_counts(out_dir: str, split: str) -> dict[str, int]:
    path = FileSystems.join(out_dir, graphs.ERRORS_DIR, f"{split}.jsonl")
    with FileSystems.open(path) as handle:
        reasons = [json.loads(line)["reason"] for line in handle.read().decode("utf-8").splitlines() if line]
    return dict(sorted(collections.Counter(reasons).items()))


def _quality_findings(out_dir: str, split: str) -> list[dict]:
    path = FileSystems.join(out_dir, graphs.QUALITY_DIR, f"{split}.jsonl")
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line]


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) worker subprocesses, in MB."""
    to_mb = 1 / 1024  # ru_maxrss is in KB on Linux
    return {"driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb, 1),
            "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb, 1)}


def _cpu_seconds() -> float:
    """CPU time of this process (all threads), of its finished worker processes (multi_processing)
    and of its live decoder children: with wall time, how many cores the job kept busy."""
    own, finished = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + finished.ru_utime + finished.ru_stime + decoder_cpu_seconds()


def summarize(splits, out_dir: str, written: dict[str, int], runner: str, started: float,
              transform_dir: str | None = None, max_error_rate: float = DEFAULT_MAX_ERROR_RATE) -> dict:
    """The run summary of the output in `out_dir`; `lead_statistics` are those of the transform applied,
    read from `transform_dir` (default: `out_dir`, where the main command writes its transform).
    `error_rate_exceeded` lists the splits above `max_error_rate` (see `outcome.py`)."""
    means, stds = lead_statistics(transform_dir or out_dir)
    rejected = {split: _rejection_counts(out_dir, split) for split in splits}
    found = {split: len(sources) for split, sources in splits.items()}
    rejected_total = {split: sum(counts.values()) for split, counts in rejected.items()}
    rates = error_rates(found, rejected_total)
    return {
        "files_found": found,
        "examples_written": written,
        "rejected": rejected,
        "rejected_total": rejected_total,
        "reconciled": all(found[s] == written[s] + sum(rejected[s].values()) for s in splits),
        "error_rate": rates,
        "max_error_rate": max_error_rate,
        "error_rate_exceeded": splits_over_budget(rates, max_error_rate),
        "quality": {split: quality.summarize(_quality_findings(out_dir, split)) for split in splits},
        "class_balance": {split: class_balance(written_sources(sources, out_dir, split))
                          for split, sources in splits.items()},
        "label_file_findings": _rejection_counts(out_dir, "labels"),
        "lead_statistics": {"leads": list(LEAD_NAMES), "mean_mv": means.tolist(), "std_mv": stds.tolist()},
        "signal": {"sampling_rate_hz": SAMPLING_RATE_HZ, "num_samples": NUM_SAMPLES, "crop": "first 10 s"},
        "runner": runner,
        "wall_time_s": round(time.time() - started, 2),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _passes(wall_s: float, cpu_s: float) -> dict:
    """What the Beam job itself cost (imports, discovery and the report excluded)."""
    return {"wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "cores_busy": round(cpu_s / max(wall_s, 1e-9), 2)}


def run_job(config: JobConfig, beam_args: list[str]) -> dict:
    """Runs both passes and publishes `config.output_dir`; returns the run summary."""
    started = time.time()
    labels = read_labels(config.labels_path)
    splits = discover(config, labels)
    findings = label_file_findings(labels, [s for sources in splits.values() for s in sources], config.labels_path)
    options = pipeline_options(beam_args)
    runner = describe_runner(options)
    decode_options = config.decode
    staging, tft_temp = staging_dir_for(config.output_dir), tft_temp_dir(options)
    _log.info("found %s .mat files; running on %s", {k: len(v) for k, v in splits.items()}, runner)
    try:
        with tft_beam.Context(temp_dir=tft_temp):
            pipeline = beam.Pipeline(options=options)
            graphs.build_job(pipeline, splits, findings, decode_options, staging, config.write)
            beam_started, cpu_started = time.monotonic(), _cpu_seconds()
            result = pipeline.run()
            result.wait_until_finish()
            if is_dry_run(options):
                _log.info("dry run: the job was built, not submitted")
                return dry_run_summary(result, runner)
            passes = _passes(time.monotonic() - beam_started, _cpu_seconds() - cpu_started)
            _log.info("both passes done after %.1f s: %.1f s in Beam, %.2f cores busy", time.time() - started,
                      passes["wall_s"], passes["cores_busy"])
        metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema()),
                                   FileSystems.join(staging, RAW_METADATA_DIR))
        written = {split: counter(result, f"{split}_examples_written") for split in splits}
        if written[TRAIN_SPLIT] == 0:  # the statistics were learned from nothing: publish none of it
            kept = " and pass the quality flags (--reject_flagged)" if decode_options.reject_flagged else ""
            raise ConfigurationError(f"none of the training files in {config.train_dir} could be decoded{kept}")
        summary = summarize(splits, staging, written, runner, started, max_error_rate=config.max_error_rate)
        summary["beam_passes"] = passes
        # Drawn before publishing, so the report is part of the atomic output; a failure is recorded, not raised.
        summary["report"] = run_report.build_safely(staging, summary, splits[TRAIN_SPLIT],
                                                    decode_options.default_sampling_rate, decode_options.pad_short)
        with FileSystems.create(FileSystems.join(staging, SUMMARY_FILE)) as handle:
            handle.write(json.dumps(summary, indent=2).encode("utf-8"))
        publish(staging, config.output_dir)
    except BaseException:
        discard(staging, config.output_dir)
        raise
    finally:
        if is_local(tft_temp):
            shutil.rmtree(tft_temp, ignore_errors=True)
    return summary
