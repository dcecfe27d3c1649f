"""What both runs need from Beam around their graphs: the options with this project's local defaults,
how the runner is described, dry runs, the job's counters and tf.Transform's scratch space."""
from __future__ import annotations

import os
import tempfile
import uuid

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions,
                                                  TestOptions)

from beam_pipeline.graph.counts import METRICS_NAMESPACE
from beam_pipeline.runs.runner_defaults import (DATAFLOW_RUNNER, DEFAULT_LOCAL_RUNNING_MODE, DEFAULT_RUNNER,
                                               LOCAL_RUNNERS)


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options as given, with the measured-fastest local defaults for what was not given:
    FnApiRunner, `in_memory` with one worker thread per core (`runner_defaults.py` says why)."""
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
    """What a dry run can report (when the runner kept the job): the names of its top-level steps and
    the size of its pipeline proto, the graph the launcher submits (bench/archive_scale.py tracks it)."""
    job = getattr(result, "job", None)
    transforms = job.proto_pipeline.components.transforms.values() if job is not None else []
    steps = sorted(t.unique_name for t in transforms if t.unique_name and "/" not in t.unique_name)
    proto_bytes = job.proto_pipeline.ByteSize() if job is not None else None
    return {"dry_run": True, "runner": runner, "steps": steps, "pipeline_proto_bytes": proto_bytes}


def counter(result, name: str) -> int:
    """A counter of this job's metrics namespace, summed over steps."""
    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["counters"]
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in counters)


def counters_with_prefix(result, prefix: str) -> dict[str, int]:
    """Every counter of this job's namespace whose name starts with `prefix`, by the rest of its name."""
    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    totals: dict[str, int] = {}
    for c in counters:
        if c.key.metric.name.startswith(prefix):
            name = c.key.metric.name[len(prefix):]
            totals[name] = totals.get(name, 0) + ((c.committed if c.committed is not None else c.attempted) or 0)
    return dict(sorted(totals.items()))


def tft_temp_dir(options: PipelineOptions) -> str:
    """tf.Transform's scratch space: under --temp_location when given (it must be shared with remote
    workers), else a local temporary folder. Never inside the output directory. A dry run keeps it
    local: tf.Transform creates it while the graph is built, and a dry run must work offline."""
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location and not is_dry_run(options):
        return FileSystems.join(temp_location, f"tft-{uuid.uuid4().hex[:12]}")
    return tempfile.mkdtemp(prefix="ecg-tft-")


def returns_at_submission(options: PipelineOptions) -> bool:
    """Whether a launcher whose job publishes itself (`--publish_in_job`) may return once the job is
    submitted: on Dataflow, whose jobs outlive their launcher (a Flex Template's ends at submission).
    Every other runner is waited for, since the job may use this machine's temporary folders."""
    return options.view_as(StandardOptions).runner == DATAFLOW_RUNNER
