"""One reprocessing run: the new recordings in INCOMING -> one published batch under ROOT, normalized
with the frozen statistics of an earlier run (its `transform_fn`, applied as is, never re-analyzed).

    ROOT/.lock                       flock held for the whole run (run_lock.py)
    ROOT/_ECG_PIPELINE_OUTPUT        the marker saying ROOT is a reprocessing root (output_guard.py)
    ROOT/ledger.jsonl                every input file published so far, and in which batch (ledger.py)
    ROOT/batch-<UTC time>/           one folder per run that found something new:
        data/part-*.tfrecord.gz      the pipeline's output layout, split "data"
        errors/data.jsonl, errors/labels.jsonl
        inputs.jsonl                 the files this batch consumed (its manifest)
        run_summary.json             counts, the frozen statistics, the batch's own, drift flags,
                                     the transform's fingerprint, the model (with --model_dir)
        predictions.csv              with --model_dir: the newest model version's scores of data/
        _SUCCESS                     written last

The order of a run is what makes it safe to kill at any moment:
  0. check that ROOT is new, empty or a reprocessing root, outside the inputs (output_guard.py), and
     that the model of --model_dir, if given, has a version trained with --transform_dir's transform;
  1. lock ROOT, then remove what killed runs left (only now is it certain that no run is writing);
  2. reconcile the ledger with the published batch folders (ledger.reconcile); refuse a transform
     other than the one ROOT belongs to (`claim_transform`);
  3. list INCOMING once, hash what moved, select the records any file of which (`.mat`, `.hea`, a WFDB
     record's signal files) is new or changed;
  4. one Beam pass into a hidden staging sibling: decode, TransformDataset, encode, the batch's
     per-lead moments for the drift check, and with --model_dir the scores (`predictions.csv`): a
     scoring failure fails the pass, so no batch is published without its predictions;
  5. summary and manifest into the staging folder, then rename it to `batch-<time>`: the commit point;
  6. rewrite the ledger. A kill before 5 leaves ROOT as it was; a kill between 5 and 6 is rolled
     forward by step 2 of the next run, so no file is published twice.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
import math
import posixpath
import re
import shutil
import time

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph import demographics
from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph.drift import DriftLimits, WriteLeadMoments, drift_report, read_lead_moments
from beam_pipeline.graph.scoring import PREDICTIONS_COUNTER, RECORDS_SCORED_COUNTER
from beam_pipeline.graph.settings import ScoringModel
from beam_pipeline.graph.sources import FOUND_COUNTER, LABEL_FINDINGS_COUNTER
from beam_pipeline.graph.statistics import lead_statistics
from beam_pipeline.inputs.discovery import RecordSource, find_records, label_file_findings, list_file_metadata
from beam_pipeline.inputs.labels import Labels, read_labels
from beam_pipeline.inputs.local_files import UnlistableDirectory, is_local
from beam_pipeline.report import build as run_report
from beam_pipeline.runs.beam_runner import (counter, counters_with_prefix, describe_runner, dry_run_summary, is_dry_run,
                                            pipeline_options, tft_temp_dir)
from beam_pipeline.runs.classes import class_summary, training_classes
from beam_pipeline.runs.data_plane_guard import guard_local_data_plane
from beam_pipeline.runs.interruption import deferred_stop
from beam_pipeline.runs.ledger import (FileState, Ledger, TransformClaim, read_ledger, reconcile,
                                       remove_leftover_temp_files, scan, scan_signal_files, write_ledger,
                                       write_manifest)
from beam_pipeline.runs.outcome import DEFAULT_MAX_ERROR_RATE
from beam_pipeline.runs.output_guard import Kind, check_output_root, creating_in, read_marker, write_marker
from beam_pipeline.runs.publish import discard, publish, remove_leftovers, staging_dir_for
from beam_pipeline.runs.run_lock import try_lock
from beam_pipeline.runs.summary import (binary_class_balance, check_reconciled, check_same_geometry, read_geometry,
                                        summarize)
from ecg_common import scoring
from ecg_common.layout import (BATCH_PREFIX, BATCH_SPLIT, SUCCESS_MARKER, SUMMARY_CLASSES_KEY,
                               SUMMARY_FILE)
from ecg_common.model_layout import export_lead_statistics, resolve_version
from ecg_common.predictions import PREDICTIONS_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY
from ecg_decode.decoding.windows import stride_problem
from ecg_common.transform_fingerprint import LEAD_STATISTICS_KEY, fingerprint, same_transform
from ecg_decode.pairing import is_header, is_record, is_wfdb_record

DATA_SPLIT = BATCH_SPLIT
BATCH_TIME_FORMAT = "%Y%m%dT%H%M%S"
"""UTC, to the millisecond (appended): names sort in the order the batches were made."""
MOMENTS_FILE = "lead_moments.json"
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ReprocessConfig:
    """The reprocess command's own options (Beam's options travel separately, untouched)."""

    incoming: str
    transform_dir: str
    output_root: str
    labels_path: str | None = None
    normal_labels: tuple[str, ...] = ()
    """Class values of the labels file that mean normal (every other value abnormal); empty: labels are 0/1."""
    decode: graphs.DecodeOptions = graphs.DecodeOptions()
    """Give the base run's decoding options, so a batch is decoded as the training records were."""
    write: graphs.WriteOptions = graphs.WriteOptions()
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    min_file_age_s: float = 0.0
    drift_limits: DriftLimits = DriftLimits()
    model_dir: str | None = None
    """The trainer's --model_dir: its newest version scores each batch (`predictions.csv`); None: no scoring."""


class Outcome(enum.Enum):
    PUBLISHED = "published"
    NOTHING_NEW = "nothing_new"
    LOCKED = "locked"
    DRY_RUN = "dry_run"


@dataclasses.dataclass(frozen=True)
class ReprocessResult:
    outcome: Outcome
    batch_dir: str | None = None
    summary: dict | None = None


@dataclasses.dataclass(frozen=True)
class Selection:
    """The records of this batch, the file states to record for them, and what else the scan learned."""

    sources: list[RecordSource]
    consumed: list[FileState]
    touched: tuple[FileState, ...]
    unchanged: int
    unsettled: int


def batch_name(now: datetime.datetime) -> str:
    return f"{BATCH_PREFIX}{now.strftime(BATCH_TIME_FORMAT)}.{now.microsecond // 1000:03d}Z"


def complete_batches(root: str) -> list[str]:
    """Names of the published batch folders under `root` (those holding `_SUCCESS`), oldest first."""
    pattern = FileSystems.join(root, f"{BATCH_PREFIX}*", SUCCESS_MARKER)
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(posixpath.basename(posixpath.dirname(m.path)) for m in matches)


def _check_transform_dir(transform_dir: str) -> None:
    """Looks for the saved graph file itself: on an object store a folder cannot be checked, only an object."""
    graph = FileSystems.join(transform_dir, tft.TFTransformOutput.TRANSFORM_FN_DIR, tf.saved_model.SAVED_MODEL_FILENAME_PB)
    if not FileSystems.exists(graph):
        raise ConfigurationError(f"no {tft.TFTransformOutput.TRANSFORM_FN_DIR}/ in {transform_dir}: "
                                 "--transform_dir must be the output directory of an earlier pipeline run")


def _check_geometry(config: ReprocessConfig) -> None:
    """The batch must be cut as the transform was built (rate, window, leads): one line otherwise."""
    if (problem := config.decode.geometry.problem()) is not None:
        raise ConfigurationError(f"--target_rate_hz/--window_s/--leads: {problem}")
    if (problem := stride_problem(config.decode.geometry, config.decode.window_stride_s)) is not None:
        raise ConfigurationError(f"--window_stride_s: {problem}")
    built = read_geometry(config.transform_dir)
    shape = list(tft.TFTransformOutput(config.transform_dir).raw_feature_spec()[ECG_KEY].shape)
    if shape != list(built.shape):
        raise ConfigurationError(f"--transform_dir {config.transform_dir}: its transform takes ecg {shape}, its "
                                 f"run summary says {built.describe()}; the directory is inconsistent")
    check_same_geometry(config.decode.geometry, built, config.transform_dir)
def transform_statistics(transform_dir: str) -> dict:
    """The lead statistics `transform_dir`'s transform applies, as `run_summary.json` records them."""
    means, stds = lead_statistics(transform_dir)
    return {"mean_mv": means.tolist(), "std_mv": stds.tolist()}


def scoring_model(model_dir: str, statistics: dict, transform_dir: str) -> ScoringModel:
    """The newest version of `model_dir`, once it is known to have been trained with the transform whose
    lead statistics are `statistics` (a model of another transform would score meaningless inputs)."""
    version, export_dir = resolve_version(model_dir)
    expected = export_lead_statistics(export_dir)
    if expected is None:
        raise ConfigurationError(f"--model_dir {model_dir}: version {version} records no transform statistics "
                                 "(an export of an older trainer): train again")
    if not same_transform(statistics, expected):
        raise ConfigurationError(f"--model_dir {model_dir} (version {version}, transform {fingerprint(expected)}) was "
                                 f"trained with another transform than --transform_dir {transform_dir} "
                                 f"({fingerprint(statistics)}): its scores of these batches would be meaningless")
    # A multi-label export (its classes.txt) is scored into predict's multi-label CSV.
    return ScoringModel(model_dir, version, export_dir, scoring.export_class_names(export_dir))


def _newest_batch_statistics(root: str, ledger: Ledger) -> tuple[str, dict] | None:
    """(batch, lead statistics) of the newest published batch whose run summary records them."""
    for batch in reversed(ledger.batches):
        try:
            with FileSystems.open(FileSystems.join(root, batch, SUMMARY_FILE)) as handle:
                statistics = json.loads(handle.read().decode("utf-8")).get(LEAD_STATISTICS_KEY)
        except (OSError, ValueError):
            continue
        if isinstance(statistics, dict):
            return batch, statistics
    return None


def claim_transform(root: str, ledger: Ledger, statistics: dict, transform_dir: str) -> Ledger:
    """The ledger, once `transform_dir`'s transform is known to be the one ROOT belongs to.

    A ROOT belongs to the transform of its first batch: a batch normalized with another one could not
    be trained on or scored with the others, and today's run would leave every earlier batch
    normalized with the old statistics, unremarked. A ledger of a version that did not record the
    transform adopts this run's, unless its newest batch says it was made with another.
    """
    current = TransformClaim(fingerprint(statistics), transform_dir)
    claim = ledger.transform
    if claim is None:
        found = _newest_batch_statistics(root, ledger)
        if found is not None and not same_transform(found[1], statistics):
            raise ConfigurationError(f"{root}'s batch {found[0]} was normalized with another transform "
                                     f"({fingerprint(found[1])}) than --transform_dir {transform_dir} "
                                     f"({current.fingerprint}): give a new --output_root for this transform's batches")
        return ledger.with_transform(current)
    if claim.fingerprint != current.fingerprint:
        if claim.transform_dir == transform_dir:
            why = (f"--transform_dir {transform_dir} now holds another transform ({current.fingerprint}) than the one "
                   f"{root} belongs to ({claim.fingerprint}, read from the same folder before it was refitted)")
        else:
            why = (f"{root} belongs to the transform of {claim.transform_dir} ({claim.fingerprint}), and "
                   f"--transform_dir {transform_dir} is another ({current.fingerprint})")
        raise ConfigurationError(f"{why}: give a new --output_root for this transform's batches")
    return ledger


def _check_root(config: ReprocessConfig) -> None:
    """ROOT must be new, empty or a reprocessing root, outside the inputs: checked before anything is created."""
    check_output_root(config.output_root, {"--incoming": config.incoming, "--transform_dir": config.transform_dir,
                                           "--labels": config.labels_path}, BATCH_PREFIX)


def _remove_leftovers(root: str) -> None:
    """What killed runs left: staging folders (provably ours) and half-written ledger copies (never a
    published batch)."""
    remove_leftovers(root, rf"{re.escape(BATCH_PREFIX)}[^/]+")
    remove_leftover_temp_files(root)


def _labels(config: ReprocessConfig) -> Labels:
    multi_label = config.decode.labelling.multi_label
    return (read_labels(config.labels_path, config.normal_labels, multi_label=multi_label) if config.labels_path
            else Labels({}, ()))


def with_training_classes(config: ReprocessConfig) -> ReprocessConfig:
    """The config with the classes of the training run (`class_codes.tsv` beside its transform): a batch
    of a multi-label training is multi-label and mapped with the training classes, whatever codes it
    holds. Multi-label options against a binary training are a configuration error."""
    classes = training_classes(config.transform_dir)
    labelling = config.decode.labelling
    if classes is None:
        if labelling.multi_label:
            raise ConfigurationError(f"{config.transform_dir} is the output of a binary (0/1) run: --dx_from_header "
                                     "and --multi_label need a multi-label training output")
        return config
    labelling = dataclasses.replace(labelling, multi_label=True, classes=classes)
    return dataclasses.replace(config, decode=dataclasses.replace(config.decode, labelling=labelling))


def select(config: ReprocessConfig, ledger: Ledger, labels: Labels) -> Selection:
    """The records any file of which is new or changed since the ledger's state: a `.mat` record's `.mat`
    and `.hea`, a WFDB record's `.hea` and the signal files it names (`ledger.scan_signal_files`)."""
    listing = list_file_metadata(config.incoming)
    if not listing:
        _log.warning("no file at all under %s (on an object store a mistyped prefix looks the same)", config.incoming)
    # An unlistable directory is recorded like a file (never read), so it is reported in one batch.
    relevant = [m for m in listing
                if is_record(m.path) or is_header(m.path) or isinstance(m, UnlistableDirectory)]
    settled_before = time.time() - config.min_file_age_s if config.min_file_age_s > 0 else math.inf
    sources = find_records(config.incoming, DATA_SPLIT, labels, listing,
                           labels_in_header=config.decode.labelling.from_header)
    scanned = scan_signal_files(scan(relevant, ledger, settled_before, config.incoming), ledger,
                                [s.path for s in sources if is_wfdb_record(s.path)], listing, settled_before,
                                config.incoming)

    def files_of(source: RecordSource) -> list[str]:
        state = scanned.states.get(source.path)
        parts = [p for p in (state.signal_files or ()) if p in scanned.states] if state else []
        return [p for p in (source.path, source.header_path, *parts) if p]

    selected = [s for s in sources
                if not any(p in scanned.unsettled for p in files_of(s))
                and any(p in scanned.changed for p in files_of(s))]
    consumed = [scanned.states[p] for s in selected for p in files_of(s)]
    unchanged = sum(1 for s in sources if not any(p in scanned.changed or p in scanned.unsettled for p in files_of(s)))
    return Selection(selected, consumed, scanned.touched, unchanged, len(scanned.unsettled))


def _batch_findings(labels: Labels, sources: list[RecordSource], labels_path: str | None):
    """Labels-file findings about this batch's records only (the labels file covers the whole archive)."""
    if not labels_path:
        return []
    ids = {s.record_id for s in sources}
    return [f for f in label_file_findings(labels, sources, labels_path) if f.record_id in ids]


def _drift(summary: dict, moments_path: str, limits: DriftLimits) -> dict:
    frozen = summary["lead_statistics"]
    return drift_report(read_lead_moments(moments_path), np.array(frozen["mean_mv"]), np.array(frozen["std_mv"]),
                        limits, tuple(frozen["leads"]))


def _scored(result, model: ScoringModel, written: int) -> dict:
    """The run summary's `model`, once every example written is known to have been scored."""
    scored = counter(result, PREDICTIONS_COUNTER)
    if scored != written:
        raise RuntimeError(f"scoring: {scored} predictions for {written} examples written")
    return {"model_dir": model.model_dir, "version": model.version, "export_dir": model.export_dir,
            "predictions": PREDICTIONS_FILE, "records_scored": counter(result, RECORDS_SCORED_COUNTER)}


def _run_batch(config: ReprocessConfig, selection: Selection, labels: Labels, batch: str, staging: str,
               beam_args: list[str], started: float, model: ScoringModel | None = None) -> dict:
    """The Beam pass into `staging`; returns the run summary (or a dry run's report)."""
    options = pipeline_options(beam_args)
    guard_local_data_plane(options)  # before the runner starts its workers
    runner = describe_runner(options)
    splits = {DATA_SPLIT: selection.sources}
    _log.info("%s: %d new or changed records (%d unchanged) from %s, on %s", batch, len(selection.sources),
              selection.unchanged, config.incoming, runner)
    tft_temp, pipeline = None, None
    try:
        with deferred_stop():  # a stop lands after the assignment, inside `try`
            tft_temp = tft_temp_dir(options)
        moments_path = FileSystems.join(tft_temp, MOMENTS_FILE)
        with tft_beam.Context(temp_dir=tft_temp):
            pipeline = beam.Pipeline(options=options)
            findings = _batch_findings(labels, selection.sources, config.labels_path)
            raw = graphs.build_transform(pipeline, splits, findings,
                                         config.decode, config.transform_dir, staging, config.write, model)
            _ = raw[DATA_SPLIT] | "BatchStatistics" >> WriteLeadMoments(moments_path, config.decode.geometry.num_leads)
            result = pipeline.run()
            result.wait_until_finish()
        if is_dry_run(options):
            return dry_run_summary(result, runner)
        written = {DATA_SPLIT: counter(result, f"{DATA_SPLIT}_examples_written")}
        records_written = {DATA_SPLIT: counter(result, f"{DATA_SPLIT}_records_written")}
        found = {DATA_SPLIT: counter(result, f"{DATA_SPLIT}{FOUND_COUNTER}")}
        summary = summarize(found, staging, written, runner, started, transform_dir=config.transform_dir,
                            max_error_rate=config.max_error_rate,
                            label_findings=counter(result, LABEL_FINDINGS_COUNTER),
                            geometry=config.decode.geometry, records_written=records_written,
                            class_balance=binary_class_balance(lambda name: counter(result, name), found))
        if config.decode.labelling.multi_label:
            summary[SUMMARY_CLASSES_KEY], summary["class_balance"] = class_summary(
                counters_with_prefix(result, ""), config.decode.labelling.classes, found)
        check_reconciled(summary)
        summary["demographics"] = {DATA_SPLIT: demographics.summarize(lambda name: counter(result, name), DATA_SPLIT)}
        if model is not None:
            summary["model"] = _scored(result, model, written[DATA_SPLIT])
        summary["drift"] = _drift(summary, moments_path, config.drift_limits)
    finally:
        with deferred_stop():
            if tft_temp is not None and is_local(tft_temp):
                shutil.rmtree(tft_temp, ignore_errors=True)
            if pipeline is not None:  # Beam removes its own only when run() ends; a stop can come before
                shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    summary.update(batch=batch, incoming=config.incoming, transform_dir=config.transform_dir,
                   records_unchanged=selection.unchanged, files_not_settled=selection.unsettled)
    return summary


def _publish_batch(config: ReprocessConfig, selection: Selection, labels: Labels, ledger: Ledger,
                   beam_args: list[str], started: float, model: ScoringModel | None) -> ReprocessResult:
    batch = batch_name(datetime.datetime.now(datetime.timezone.utc))
    batch_dir = FileSystems.join(config.output_root, batch)
    staging = ""
    try:
        with deferred_stop():  # a stop lands after the assignment, inside `try`
            staging = staging_dir_for(batch_dir, Kind.BATCH)
        summary = _run_batch(config, selection, labels, batch, staging, beam_args, started, model)
        summary["transform_fingerprint"] = ledger.transform.fingerprint
        if summary.get("dry_run"):
            discard(staging, batch_dir)
            return ReprocessResult(Outcome.DRY_RUN, summary=summary)
        write_manifest(staging, selection.consumed)
        # Drawn before publishing, so the report is part of the atomic batch; a failure is recorded, not raised.
        summary["report"] = run_report.build_safely(staging, summary, selection.sources,
                                                    config.decode.default_sampling_rate, config.decode.pad_short,
                                                    split=DATA_SPLIT, transform_dir=config.transform_dir)
        with FileSystems.create(FileSystems.join(staging, SUMMARY_FILE)) as handle:
            handle.write(json.dumps(summary, indent=2).encode("utf-8"))
        if read_marker(config.output_root) is None:  # from the first batch on, ROOT says what it is
            write_marker(config.output_root, Kind.REPROCESS_ROOT)
        publish(staging, batch_dir)
    except BaseException:
        if staging:
            discard(staging, batch_dir)
        raise
    write_ledger(config.output_root, ledger.with_states(selection.touched).with_batch(batch, selection.consumed))
    if summary["drift"]["flagged_leads"]:
        _log.error("%s: leads %s moved beyond the drift limits (units? export settings?); see drift in %s",
                   batch, ", ".join(summary["drift"]["flagged_leads"]), FileSystems.join(batch_dir, SUMMARY_FILE))
    return ReprocessResult(Outcome.PUBLISHED, batch_dir, summary)


def run_reprocess(config: ReprocessConfig, beam_args: list[str]) -> ReprocessResult:
    """Publishes one batch of the new or changed records in `config.incoming`, or nothing when there are none."""
    started = time.time()
    _check_root(config)
    _check_transform_dir(config.transform_dir)
    _check_geometry(config)
    config = with_training_classes(config)
    statistics = transform_statistics(config.transform_dir)
    model = scoring_model(config.model_dir, statistics, config.transform_dir) if config.model_dir else None
    labels = _labels(config)
    with creating_in(config.output_root):
        lock = try_lock(config.output_root)
    if lock is None:
        return ReprocessResult(Outcome.LOCKED)
    try:
        _remove_leftovers(config.output_root)
        recorded = read_ledger(config.output_root)
        ledger = reconcile(config.output_root, recorded, complete_batches(config.output_root))
        ledger = claim_transform(config.output_root, ledger, statistics, config.transform_dir)
        selection = select(config, ledger, labels)
        if not selection.sources:
            _log.info("nothing new in %s: %d records unchanged since the last batch, %d files not settled; "
                      "no batch written", config.incoming, selection.unchanged, selection.unsettled)
            updated = ledger.with_states(selection.touched)
            if updated != recorded and not updated.is_empty():  # an adopted transform is recorded too
                write_ledger(config.output_root, updated)
            return ReprocessResult(Outcome.NOTHING_NEW)
        return _publish_batch(config, selection, labels, ledger, beam_args, started, model)
    finally:
        lock.release()
