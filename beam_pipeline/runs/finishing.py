"""What the main command does once its Beam job is done: the raw metadata, the classes, the checks
that decide whether the output may be published (every file accounted for, training examples
written, finite statistics), the run summary and the report.

All of it works from the job's counts (a mapping of counter name -> count) and the report candidates,
so it runs in the launcher after the job (the counts read from Beam's metrics) or as the job's own
last step (`--publish_in_job`, `graph/finish.py`: the counts tallied as data), where nothing runs on the
launcher after submission. `Finisher` is picklable for that reason: plain settings, no open handles.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from apache_beam.io.filesystems import FileSystems
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from beam_pipeline.graph import demographics
from beam_pipeline.graph.arrow_batches import raw_schema
from beam_pipeline.graph.settings import DecodeOptions
from beam_pipeline.graph.sources import ACCEPTED_COUNTER, FOUND_COUNTER, LABEL_FINDINGS_COUNTER
from beam_pipeline.graph.statistics import require_finite_statistics
from beam_pipeline.inputs.classes import ClassMap
from beam_pipeline.inputs.discovery import RecordSource
from beam_pipeline.inputs.labels import Labels, read_labels
from beam_pipeline.report import build as run_report
from beam_pipeline.runs.classes import class_summary, write_classes
from beam_pipeline.runs.publish import publish
from beam_pipeline.runs.summary import binary_class_balance, check_reconciled, summarize, write_summary
from ecg_common.layout import (DEFAULT_SAMPLING_RATE_KEY, GEOMETRY_KEY, PAD_SHORT_KEY, RAW_METADATA_DIR,
                               SUMMARY_CLASSES_KEY, SUMMARY_DECODING_KEY, WINDOW_STRIDE_KEY)
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import TRAIN_SPLIT

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """What the finishing steps need to know of the command line."""

    train_dir: str
    labels_path: str | None
    normal_labels: tuple[str, ...]
    splits: tuple[str, ...]
    max_error_rate: float


@dataclasses.dataclass(frozen=True)
class Finisher:
    """The steps after the Beam job, for one run writing into `staging` (published to `output_dir`)."""

    inputs: RunInputs
    decode: DecodeOptions
    classes: ClassMap | None
    staging: str
    output_dir: str
    runner: str
    started: float

    def summary(self, counts: Mapping[str, int], candidates: list[RecordSource], beam_cost: dict | None = None
                ) -> dict:
        """Writes the raw metadata, the classes, the report and `run_summary.json` into the staging
        folder; returns the summary. ConfigurationError or ReconciliationError when the output must
        not be published."""
        count = lambda name: counts.get(name, 0)  # noqa: E731 - a counter reader, as Beam's metrics give one
        labelling, geometry, splits = self.decode.labelling, self.decode.geometry, list(self.inputs.splits)
        found = {split: count(f"{split}{FOUND_COUNTER}") for split in splits}
        if count(f"{TRAIN_SPLIT}{ACCEPTED_COUNTER}") == 0:
            raise self._no_valid_training_record(found[TRAIN_SPLIT])
        _log.info("files found: %s", found)
        metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema(geometry, labelling.multi_label)),
                                   FileSystems.join(self.staging, RAW_METADATA_DIR))
        written = {split: count(f"{split}_examples_written") for split in splits}
        records_written = {split: count(f"{split}_records_written") for split in splits}
        if written[TRAIN_SPLIT] == 0:  # the statistics were learned from nothing: publish none of it
            kept = " and pass the quality flags (--reject_flagged)" if self.decode.reject_flagged else ""
            kept += " with the '# Dx:' codes of their headers (--dx_from_header)" if labelling.from_header else ""
            raise ConfigurationError(f"none of the training files in {self.inputs.train_dir} could be decoded{kept}")
        summary = summarize(found, self.staging, written, self.runner, self.started,
                            max_error_rate=self.inputs.max_error_rate, label_findings=count(LABEL_FINDINGS_COUNTER),
                            geometry=geometry, records_written=records_written,
                            class_balance=binary_class_balance(count, splits))
        if labelling.multi_label:
            write_classes(self.staging, self.classes)
            summary[SUMMARY_CLASSES_KEY], summary["class_balance"] = class_summary(counts, self.classes, splits)
        check_reconciled(summary)
        # Non-finite statistics would make every example constant: publish none of it.
        require_finite_statistics(summary["lead_statistics"]["mean_mv"], summary["lead_statistics"]["std_mv"],
                                  geometry.lead_names)
        if beam_cost is not None:
            summary["beam_passes"] = beam_cost
        summary["demographics"] = {split: demographics.summarize(count, split) for split in splits}
        summary[SUMMARY_DECODING_KEY] = {DEFAULT_SAMPLING_RATE_KEY: self.decode.default_sampling_rate,
                                         PAD_SHORT_KEY: self.decode.pad_short, GEOMETRY_KEY: geometry.to_json(),
                                         WINDOW_STRIDE_KEY: self.decode.window_stride_s}
        # Drawn before publishing, so the report is part of the atomic output; a failure is recorded, not raised.
        summary["report"] = run_report.build_safely(self.staging, summary, candidates,
                                                    self.decode.default_sampling_rate, self.decode.pad_short)
        write_summary(self.staging, summary)
        return summary

    def __call__(self, counts: Mapping[str, int], candidates: list[RecordSource]) -> None:
        """The job's last step (`--publish_in_job`): the summary, then `_SUCCESS` (the output is
        written in place on an object store)."""
        self.summary(counts, candidates)
        publish(self.staging, self.output_dir)
        _log.info("published %s from inside the job", self.output_dir)

    def _no_valid_training_record(self, found: int) -> ConfigurationError:
        """The error of a run whose training files were all rejected before decoding (no label,
        refused, duplicates). Only then is the labels file read here, to say what was wrong with it."""
        path = self.inputs.labels_path
        labels = (read_labels(path, self.inputs.normal_labels, self.decode.labelling.multi_label) if path
                  else Labels({}, ()))
        return ConfigurationError(f"no training record with a valid label: {found} .mat files in "
                                  f"{self.inputs.train_dir}, {len(labels.by_id)} usable labels in {path}"
                                  f"{labels.problem_note()}")
