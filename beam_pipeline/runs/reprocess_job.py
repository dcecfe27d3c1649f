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
  2. read the ledger's first line only and reconcile it with the published batch folders
     (`ledger.reconcile_head`); refuse a transform other than the one ROOT belongs to (`claim_transform`);
  3. one Beam job, which does the per-file work on its workers (`graph/selection.py`): list INCOMING,
     read the ledger's file lines (dropping deleted batches, rolling forward unrecorded ones), hash
     what moved, select the records any file of which (`.mat`, `.hea`, a WFDB record's signal files)
     is new or changed and settled; decode, TransformDataset and encode them into a hidden staging
     sibling with the manifest, the batch's per-lead moments for the drift check and, with
     --model_dir, the scores (`predictions.csv`: a scoring failure fails the job, so no batch is
     published without its predictions); and write the next ledger to a hidden sibling of the ledger;
  4. when nothing was selected, delete the staging folder and install the next ledger only if it
     records something new (touched files, an adopted transform);
  5. summary and report into the staging folder, then rename it to `batch-<time>`: the commit point;
  6. install the next ledger (one rename). A kill before 5 leaves ROOT as it was (step 1 of the next
     run removes the staging folder and the ledger never installed); a kill between 5 and 6 is rolled
     forward by steps 2-3 of the next run, so no file is published twice.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import math
import posixpath
import re
import shutil
import time
import uuid
from collections.abc import Mapping

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph import demographics
from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph.drift import DriftLimits, WriteLeadMoments, drift_report, read_lead_moments
from beam_pipeline.graph.finish import finish_in_job, sum_tallies
from beam_pipeline.graph.scoring import PREDICTIONS_COUNTER, RECORDS_SCORED_COUNTER
from beam_pipeline.graph.selection import (FILES_UNSETTLED_COUNTER, LEDGER_LINES_COUNTER, RECORDS_UNCHANGED_COUNTER,
                                           TOUCHED_COUNTER, LedgerInput, SelectChanged)
from beam_pipeline.graph.settings import InputSpec, ScoringModel
from beam_pipeline.graph.sources import (FOUND_COUNTER, LABEL_FINDINGS_COUNTER, candidates_file, read_candidates,
                                         write_candidates)
from beam_pipeline.graph.statistics import lead_statistics
from beam_pipeline.inputs.discovery import RecordSource, check_input_directory
from beam_pipeline.inputs.labels import check_readable
from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.report import build as run_report
from beam_pipeline.runs.beam_runner import (counters_with_prefix, describe_runner, dry_run_summary, is_dry_run,
                                            pipeline_options, returns_at_submission, tft_temp_dir)
from beam_pipeline.runs.classes import class_summary, training_classes
from beam_pipeline.runs.data_plane_guard import guard_local_data_plane
from beam_pipeline.runs.interruption import deferred_stop
from beam_pipeline.runs.ledger import (LEDGER_FILE, MANIFEST_FILE, LedgerHead, Reconciled, TransformClaim,
                                       discard_new_ledger, install_ledger, new_ledger_path, read_ledger_head,
                                       reconcile_head, remove_leftover_temp_files, write_ledger_head)
from beam_pipeline.runs.local_runner_overheads import trim_local_overheads
from beam_pipeline.runs.outcome import DEFAULT_MAX_ERROR_RATE
from beam_pipeline.runs.output_guard import Kind, check_output_root, creating_in, read_marker, write_marker
from beam_pipeline.runs.publish import discard, discard_unpublished, publish, remove_leftovers, staging_dir_for
from beam_pipeline.runs.run_lock import try_lock
from beam_pipeline.runs.summary import (binary_class_balance, check_reconciled, check_same_geometry, read_geometry,
                                        read_summary, summarize, write_summary)
from ecg_common import scoring
from ecg_common.layout import (BATCH_PREFIX, BATCH_SPLIT, SUCCESS_MARKER, SUMMARY_CLASSES_KEY,
                               SUMMARY_FILE)
from ecg_common.model_layout import export_lead_statistics, resolve_version
from ecg_common.predictions import PREDICTIONS_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ECG_KEY
from ecg_decode.decoding.windows import stride_problem
from ecg_common.transform_fingerprint import LEAD_STATISTICS_KEY, fingerprint, same_transform

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
    publish_in_job: bool = False
    """The job's last step publishes the batch and installs the ledger (`BatchFinisher`): nothing runs
    on the launcher after submission (a Dataflow Flex Template)."""


class Outcome(enum.Enum):
    PUBLISHED = "published"
    NOTHING_NEW = "nothing_new"
    LOCKED = "locked"
    DRY_RUN = "dry_run"
    SUBMITTED = "submitted"
    """--publish_in_job on Dataflow: the job was submitted and publishes its batch itself."""


@dataclasses.dataclass(frozen=True)
class ReprocessResult:
    outcome: Outcome
    batch_dir: str | None = None
    summary: dict | None = None


@dataclasses.dataclass(frozen=True)
class Night:
    """What one run works with once ROOT is locked: the ledger's head as recorded and as reconciled
    (with the transform claimed), this run's batch, and what its job reads and writes of the ledger."""

    recorded: LedgerHead
    reconciled: Reconciled
    batch: str
    ledger: LedgerInput


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


def _newest_batch_statistics(root: str, ledger: LedgerHead) -> tuple[str, dict] | None:
    """(batch, lead statistics) of the newest published batch whose run summary records them."""
    for batch in reversed(ledger.batches):
        try:
            statistics = read_summary(FileSystems.join(root, batch)).get(LEAD_STATISTICS_KEY)
        except (OSError, ValueError):
            continue
        if isinstance(statistics, dict):
            return batch, statistics
    return None


def claim_transform(root: str, ledger: LedgerHead, statistics: dict, transform_dir: str) -> LedgerHead:
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


def _input_spec(config: ReprocessConfig) -> InputSpec:
    """INCOMING and the labels file, which the job lists and reads itself (`graph/selection.py`)."""
    labelling = config.decode.labelling
    return InputSpec({DATA_SPLIT: config.incoming}, config.labels_path, config.normal_labels, labelling.multi_label,
                     labelling.from_header)


def _check_inputs(config: ReprocessConfig) -> None:
    """Broken configuration that shows without listing anything: ConfigurationError before anything is created."""
    check_input_directory(config.incoming)
    if config.labels_path:
        check_readable(config.labels_path)


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


def _night(config: ReprocessConfig, statistics: dict) -> Night:
    """The ledger's head reconciled with the published batches and claimed for the transform, and what
    the job is to read and write of the ledger (under the lock: no other run changes either)."""
    root = config.output_root
    recorded = read_ledger_head(root)
    reconciled = reconcile_head(recorded, complete_batches(root))
    head = claim_transform(root, reconciled.head, statistics, config.transform_dir)
    reconciled = dataclasses.replace(reconciled, head=head)
    batch = batch_name(datetime.datetime.now(datetime.timezone.utc))
    ledger_path = FileSystems.join(root, LEDGER_FILE)
    settled_before = time.time() - config.min_file_age_s if config.min_file_age_s > 0 else math.inf
    ledger = LedgerInput(ledger_path if FileSystems.exists(ledger_path) else None, reconciled.dropped,
                         tuple((b, FileSystems.join(root, b, MANIFEST_FILE)) for b in reconciled.rolled_forward),
                         batch, head.line((*head.batches, batch)), head.line(), new_ledger_path(root), settled_before)
    return Night(recorded, reconciled, batch, ledger)


def _drift(summary: dict, moments_path: str, limits: DriftLimits) -> dict:
    frozen = summary["lead_statistics"]
    return drift_report(read_lead_moments(moments_path), np.array(frozen["mean_mv"]), np.array(frozen["std_mv"]),
                        limits, tuple(frozen["leads"]))


def _scored(counts: Mapping[str, int], model: ScoringModel, written: int) -> dict:
    """The run summary's `model`, once every example written is known to have been scored."""
    scored = counts.get(PREDICTIONS_COUNTER, 0)
    if scored != written:
        raise RuntimeError(f"scoring: {scored} predictions for {written} examples written")
    return {"model_dir": model.model_dir, "version": model.version, "export_dir": model.export_dir,
            "predictions": PREDICTIONS_FILE, "records_scored": counts.get(RECORDS_SCORED_COUNTER, 0)}


@dataclasses.dataclass(frozen=True)
class BatchFinisher:
    """What follows the job of one run, from the job's counts and report candidates: the summary, the
    report and publishing the batch, then the ledger; or, with nothing selected, the ledger alone. It
    runs in the launcher after the job, or as the job's own last step (`--publish_in_job`), so it is
    plain settings (picklable)."""

    config: ReprocessConfig
    night: Night
    staging: str
    runner: str
    started: float
    moments_path: str
    model: ScoringModel | None

    @property
    def batch_dir(self) -> str:
        return FileSystems.join(self.config.output_root, self.night.batch)

    def finish(self, counts: Mapping[str, int], candidates: list[RecordSource]) -> ReprocessResult:
        config, night = self.config, self.night
        selected = counts.get(f"{DATA_SPLIT}{FOUND_COUNTER}", 0)
        unchanged, unsettled = counts.get(RECORDS_UNCHANGED_COUNTER, 0), counts.get(FILES_UNSETTLED_COUNTER, 0)
        if not selected:
            _log.info("nothing new in %s: %d records unchanged since the last batch, %d files not settled; "
                      "no batch written", config.incoming, unchanged, unsettled)
            discard_unpublished(self.staging, self.batch_dir)
            _leave_ledger(config, night, counts)
            return ReprocessResult(Outcome.NOTHING_NEW)
        _log.info("%s: %d new or changed records (%d unchanged) from %s", night.batch, selected, unchanged,
                  config.incoming)
        summary = self._summary(counts)
        summary.update(batch=night.batch, incoming=config.incoming, transform_dir=config.transform_dir,
                       records_unchanged=unchanged, files_not_settled=unsettled,
                       transform_fingerprint=night.reconciled.head.transform.fingerprint)
        # Drawn before publishing, so the report is part of the atomic batch; a failure is recorded, not raised.
        summary["report"] = run_report.build_safely(self.staging, summary, candidates,
                                                    config.decode.default_sampling_rate, config.decode.pad_short,
                                                    split=DATA_SPLIT, transform_dir=config.transform_dir)
        write_summary(self.staging, summary)
        if read_marker(config.output_root) is None:  # from the first batch on, ROOT says what it is
            write_marker(config.output_root, Kind.REPROCESS_ROOT)
        publish(self.staging, self.batch_dir)
        install_ledger(config.output_root, night.ledger.next_ledger_path)
        if summary["drift"]["flagged_leads"]:
            _log.error("%s: leads %s moved beyond the drift limits (units? export settings?); see drift in %s",
                       night.batch, ", ".join(summary["drift"]["flagged_leads"]),
                       FileSystems.join(self.batch_dir, SUMMARY_FILE))
        return ReprocessResult(Outcome.PUBLISHED, self.batch_dir, summary)

    def __call__(self, counts: Mapping[str, int], candidates: list[RecordSource]) -> None:
        """The job's last step (`--publish_in_job`)."""
        self.finish(counts, candidates)

    def _summary(self, counts: Mapping[str, int]) -> dict:
        """The batch's run summary; raises when the counts do not reconcile."""
        config = self.config
        count = lambda name: counts.get(name, 0)  # noqa: E731 - a counter reader, as Beam's metrics give one
        written = {DATA_SPLIT: count(f"{DATA_SPLIT}_examples_written")}
        records_written = {DATA_SPLIT: count(f"{DATA_SPLIT}_records_written")}
        found = {DATA_SPLIT: count(f"{DATA_SPLIT}{FOUND_COUNTER}")}
        summary = summarize(found, self.staging, written, self.runner, self.started,
                            transform_dir=config.transform_dir, max_error_rate=config.max_error_rate,
                            label_findings=count(LABEL_FINDINGS_COUNTER), geometry=config.decode.geometry,
                            records_written=records_written, class_balance=binary_class_balance(count, found))
        if config.decode.labelling.multi_label:
            summary[SUMMARY_CLASSES_KEY], summary["class_balance"] = class_summary(
                counts, config.decode.labelling.classes, found)
        check_reconciled(summary)
        summary["demographics"] = {DATA_SPLIT: demographics.summarize(count, DATA_SPLIT)}
        if self.model is not None:
            summary["model"] = _scored(counts, self.model, written[DATA_SPLIT])
        summary["drift"] = _drift(summary, self.moments_path, config.drift_limits)
        return summary


def _leave_ledger(config: ReprocessConfig, night: Night, counts: Mapping[str, int]) -> None:
    """After a run that published nothing: the ledger the job wrote is installed when it records
    something new (touched files, the transform adopted, batches reconciled) and is not the empty
    ledger of a new ROOT; else it is deleted (ours, never installed)."""
    head = night.reconciled.head
    changed = counts.get(TOUCHED_COUNTER, 0) > 0 or head != night.recorded
    empty = not head.batches and counts.get(LEDGER_LINES_COUNTER, 0) == 0
    written = night.ledger.next_ledger_path
    if changed and not empty and FileSystems.exists(written):
        install_ledger(config.output_root, written)
    elif changed and not empty:  # no file line at all: the job's writer had nothing to write
        write_ledger_head(config.output_root, head)
    else:
        discard_new_ledger(written)


def _run_batch(config: ReprocessConfig, night: Night, staging: str, beam_args: list[str], started: float,
               model: ScoringModel | None = None) -> ReprocessResult:
    """The Beam job: selects the new and changed records, runs them into `staging`, writes the next
    ledger; then (`BatchFinisher`) publishes the batch and installs the ledger, in the launcher or,
    with --publish_in_job, as the job's last step."""
    options = pipeline_options(beam_args)
    guard_local_data_plane(options)  # before the runner starts its workers
    trim_local_overheads(options)  # before the graph is built
    runner = describe_runner(options)
    _log.info("%s: selecting the new and changed records of %s against %s, on %s", night.batch, config.incoming,
              config.output_root, runner)
    tft_temp, pipeline = None, None
    try:
        with deferred_stop():  # a stop lands after the assignment, inside `try`
            tft_temp = tft_temp_dir(options)
        finisher = BatchFinisher(config, night, staging, runner, started, FileSystems.join(tft_temp, MOMENTS_FILE),
                                 model)
        with tft_beam.Context(temp_dir=tft_temp):
            pipeline = beam.Pipeline(options=options)
            _build_batch_job(pipeline, finisher, candidates_file(tft_temp))
            result = pipeline.run()
            if config.publish_in_job and not is_dry_run(options) and returns_at_submission(options):
                _log.info("submitted; the job publishes %s itself when it is done", finisher.batch_dir)
                return ReprocessResult(Outcome.SUBMITTED, finisher.batch_dir)
            result.wait_until_finish()
        if is_dry_run(options):
            return ReprocessResult(Outcome.DRY_RUN, summary=dry_run_summary(result, runner))
        if config.publish_in_job:  # a local runner: the job's last step has done it all
            return _published(finisher.batch_dir)
        return finisher.finish(counters_with_prefix(result, ""), read_candidates(candidates_file(tft_temp)))
    finally:
        with deferred_stop():
            if tft_temp is not None and is_local(tft_temp):
                shutil.rmtree(tft_temp, ignore_errors=True)
            if pipeline is not None:  # Beam removes its own only when run() ends; a stop can come before
                shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)


def _build_batch_job(pipeline: beam.Pipeline, finisher: BatchFinisher, candidates_path: str) -> None:
    """The reprocessing job: the selection (`graph/selection.py`), the manifest, the transform pass
    with the drift moments and the scores, and with --publish_in_job the finisher as its last step."""
    config, night = finisher.config, finisher.night
    token = uuid.uuid4().hex
    selected = pipeline | "Select" >> SelectChanged(_input_spec(config), night.ledger, token)
    manifest = (selected.consumed | "ManifestLines" >> beam.Map(lambda state: state.to_json())
                | "WriteManifest" >> beam.io.WriteToText(FileSystems.join(finisher.staging, "inputs"),
                                                         file_name_suffix=".jsonl", shard_name_template=""))
    transformed = graphs.build_transform(pipeline, {DATA_SPLIT: selected.sources}, selected.label_findings,
                                         config.decode, config.transform_dir, finisher.staging, token, config.write,
                                         finisher.model)
    moments = (transformed.raw_batches[DATA_SPLIT]
               | "BatchStatistics" >> WriteLeadMoments(finisher.moments_path, config.decode.geometry.num_leads))
    if not config.publish_in_job:
        _ = write_candidates(selected.report_candidates, candidates_path)
        return
    tally = sum_tallies([*selected.tallies, *transformed.tallies])
    _ = finish_in_job(pipeline, tally, selected.report_candidates,
                      [manifest, moments, selected.ledger_written, *transformed.done], finisher)


def _published(batch_dir: str) -> ReprocessResult:
    """What the job's last step did, read back: the batch it published, or nothing new."""
    if not FileSystems.exists(FileSystems.join(batch_dir, SUCCESS_MARKER)):
        return ReprocessResult(Outcome.NOTHING_NEW)
    return ReprocessResult(Outcome.PUBLISHED, batch_dir, read_summary(batch_dir))


def _publish_batch(config: ReprocessConfig, night: Night, beam_args: list[str], started: float,
                   model: ScoringModel | None) -> ReprocessResult:
    batch_dir = FileSystems.join(config.output_root, night.batch)
    staging = ""
    try:
        with deferred_stop():  # a stop lands after the assignment, inside `try`
            staging = staging_dir_for(batch_dir, Kind.BATCH)
        result = _run_batch(config, night, staging, beam_args, started, model)
        if result.outcome is Outcome.DRY_RUN:
            discard_unpublished(staging, batch_dir)
        return result
    except BaseException:
        if staging:
            discard(staging, batch_dir)
        discard_new_ledger(night.ledger.next_ledger_path)
        raise


def run_reprocess(config: ReprocessConfig, beam_args: list[str]) -> ReprocessResult:
    """Publishes one batch of the new or changed records in `config.incoming`, or nothing when there are none."""
    started = time.time()
    _check_root(config)
    _check_transform_dir(config.transform_dir)
    _check_geometry(config)
    _check_inputs(config)
    config = with_training_classes(config)
    statistics = transform_statistics(config.transform_dir)
    model = scoring_model(config.model_dir, statistics, config.transform_dir) if config.model_dir else None
    with creating_in(config.output_root):
        lock = try_lock(config.output_root)
    if lock is None:
        return ReprocessResult(Outcome.LOCKED)
    try:
        _remove_leftovers(config.output_root)
        return _publish_batch(config, _night(config, statistics), beam_args, started, model)
    finally:
        lock.release()
