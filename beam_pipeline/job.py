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
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from beam_pipeline import pipeline as graphs
from beam_pipeline.arrow_batches import raw_schema
from beam_pipeline.discovery import RecordSource, find_records, label_file_findings
from beam_pipeline.labels import Labels, parse_labels
from beam_pipeline.publish import discard, is_local, publish, staging_dir_for
from beam_pipeline.read import METRICS_NAMESPACE
from beam_pipeline.rejections import ConfigurationError
from beam_pipeline.schema import LEAD_NAMES, NUM_SAMPLES, SAMPLING_RATE_HZ, TEST_SPLIT, TRAIN_SPLIT
from beam_pipeline.statistics import lead_statistics
from beam_pipeline.tfrecord_sink import DEFAULT_GZIP_LEVEL

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
    sampling_rate: float = SAMPLING_RATE_HZ
    pad_short: bool = False
    num_shards: int = 0
    batch_size: int = 32
    gzip_level: int = DEFAULT_GZIP_LEVEL


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


def _describe_runner(options: PipelineOptions) -> str:
    runner = str(options.view_as(StandardOptions).runner)
    if runner in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        return f"{runner} ({direct.direct_running_mode}, {direct.direct_num_workers} workers)"
    return runner


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


def _counter(result, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["counters"]
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in counters)


def _tft_temp_dir(options: PipelineOptions) -> str:
    """tf.Transform's scratch space: under --temp_location when given (it must be shared with remote
    workers), else a local temporary folder. Never inside the output directory."""
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location:
        return FileSystems.join(temp_location, f"tft-{uuid.uuid4().hex[:12]}")
    return tempfile.mkdtemp(prefix="ecg-tft-")


def _rejection_counts(out_dir: str, split: str) -> dict[str, int]:
    path = FileSystems.join(out_dir, graphs.ERRORS_DIR, f"{split}.jsonl")
    with FileSystems.open(path) as handle:
        reasons = [json.loads(line)["reason"] for line in handle.read().decode("utf-8").splitlines() if line]
    return dict(sorted(collections.Counter(reasons).items()))


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) worker subprocesses, in MB."""
    to_mb = 1 / 1024  # ru_maxrss is in KB on Linux
    return {"driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb, 1),
            "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb, 1)}


def _summary(splits, out_dir: str, written: dict[str, int], runner: str, started: float) -> dict:
    means, stds = lead_statistics(out_dir)
    rejected = {split: _rejection_counts(out_dir, split) for split in splits}
    found = {split: len(sources) for split, sources in splits.items()}
    return {
        "files_found": found,
        "examples_written": written,
        "rejected": rejected,
        "rejected_total": {split: sum(counts.values()) for split, counts in rejected.items()},
        "reconciled": all(found[s] == written[s] + sum(rejected[s].values()) for s in splits),
        "label_file_findings": _rejection_counts(out_dir, "labels"),
        "lead_statistics": {"leads": list(LEAD_NAMES), "mean_mv": means.tolist(), "std_mv": stds.tolist()},
        "signal": {"sampling_rate_hz": SAMPLING_RATE_HZ, "num_samples": NUM_SAMPLES, "crop": "first 10 s"},
        "runner": runner,
        "wall_time_s": round(time.time() - started, 2),
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_job(config: JobConfig, beam_args: list[str]) -> dict:
    """Runs both passes and publishes `config.output_dir`; returns the run summary."""
    started = time.time()
    labels = read_labels(config.labels_path)
    splits = discover(config, labels)
    findings = label_file_findings(labels, [s for sources in splits.values() for s in sources], config.labels_path)
    options = pipeline_options(beam_args)
    runner = _describe_runner(options)
    decode_options = graphs.DecodeOptions(config.sampling_rate, config.pad_short, config.batch_size)
    staging, tft_temp = staging_dir_for(config.output_dir), _tft_temp_dir(options)
    _log.info("found %s .mat files; running on %s", {k: len(v) for k, v in splits.items()}, runner)
    try:
        with tft_beam.Context(temp_dir=tft_temp):
            analyze = beam.Pipeline(options=options)
            graphs.build_analyze(analyze, [s for s in splits[TRAIN_SPLIT] if s.rejection is None], decode_options, staging)
            result = analyze.run()
            result.wait_until_finish()
            _log.info("analyze pass done after %.1f s", time.time() - started)
            if _counter(result, "records_decoded") == 0:
                raise ConfigurationError(f"none of the training files in {config.train_dir} could be decoded")
            metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema()),
                                       FileSystems.join(staging, RAW_METADATA_DIR))
            transform = beam.Pipeline(options=options)
            graphs.build_transform(transform, splits, findings, decode_options, staging, staging,
                                   config.num_shards, config.gzip_level)
            result = transform.run()
            result.wait_until_finish()
            _log.info("transform pass done after %.1f s", time.time() - started)
        written = {split: _counter(result, f"{split}_examples_written") for split in splits}
        summary = _summary(splits, staging, written, runner, started)
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
