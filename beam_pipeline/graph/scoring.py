"""Nightly scoring in the Beam graph: the batch's serialized examples -> the exported model's
`transformed` signature -> `predictions.csv`, in the same pass that writes the TFRecords.

The examples scored are the very bytes written to the shards, parsed and scored by
`ecg_common.scoring` (the functions `trainer.predict` uses), and the CSV is written by
`ecg_common.predictions.csv_text` (predict's writer): a batch's `predictions.csv` is what
`python -m trainer.predict --data_dir ROOT/batch-X --split data` writes for it. A record cut into
windows (`--window_stride_s`) gets one row, the mean over its windows thresholded at the model's
threshold (`ecg_common.predictions.mean_per_record`, predict's default); a multi-label model's CSV
is `ecg_common.predictions.multi_label_csv_text` of `multi_label_rows_per_record`, as predict's.

Why a DoFn of our own rather than RunInference with `TFModelHandlerTensor`: Beam 2.77's TensorFlow
handler does not import here (`ModuleNotFoundError: No module named 'tensorflow_hub'`: it needs
tensorflow_hub, which is not installed and which we do not want on workers), and it loads through
`tf.keras.models.load_model`, which refuses the export (checked: "Unable to create a TF-Keras model
from SavedModel ... exported with `tf.saved_model.save`, and lacks the TF-Keras metadata file"; it is
a `tf.Module` holding a Keras 3 model and tf.Transform's tf_keras layer). Its `inference_fn` would
also see tensors, not serialized examples with their record ids and labels. So no speed comparison
could be made; the cost of this DoFn is measured by `bench/nightly_scoring.py`. The DoFn does what RunInference
does for us: the SavedModel is loaded once per worker process (`beam.utils.shared.Shared`, so the
DoFn instances of every bundle thread share it) in `setup`, and it scores `BatchElements` batches.
"""
from __future__ import annotations

import math
import typing

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.shared import Shared

from beam_pipeline.graph.counts import TALLY_TAG, TallyingDoFn
from beam_pipeline.graph.settings import ScoringModel
from ecg_common import scoring
from ecg_common.predictions import csv_text, mean_per_record, multi_label_csv_text, multi_label_rows_per_record

PREDICTIONS_COUNTER = "predictions_written"
"""Examples (windows) scored: every example written to the shards must be."""
RECORDS_SCORED_COUNTER = "records_scored"
"""Rows of `predictions.csv`: one per record for a binary model."""


class _LoadedExport:
    """A loaded export, its `transformed` signature, the spec its examples are parsed with and its
    class names (None: binary). Holds `loaded`: a signature does not own the variables it reads."""

    def __init__(self, export_dir: str):
        self.loaded = tf.saved_model.load(export_dir)
        self.score = scoring.transformed_scorer(self.loaded, export_dir)
        self.class_names = scoring.export_class_names(export_dir)
        spec = scoring.export_feature_spec(export_dir)
        self.spec = (scoring.parsing_spec(spec) if self.class_names is None
                     else scoring.multi_label_parsing_spec(spec, len(self.class_names)))


class ScoreExamplesFn(TallyingDoFn):
    """A list of serialized transformed examples -> per example (window), (threshold, Prediction) for a
    binary model, (per-class thresholds, multi-label row) for a multi-label one: the thresholds the
    record's mean over its windows is compared with when the rows are gathered (`predictions_text`)."""

    def __init__(self, export_dir: str):
        self._export_dir = export_dir
        self._shared = Shared()

    def setup(self) -> None:
        self._export = self._shared.acquire(lambda: _LoadedExport(self._export_dir))

    def process(self, serialized: list[bytes]):
        export = self._export
        if export.class_names is not None:
            thresholds = scoring.model_thresholds(export.loaded)
            rows = [(thresholds, row) for row in scoring.score_serialized_multi_label(export.score, export.spec,
                                                                                      serialized)]
        else:
            threshold = scoring.model_threshold(export.loaded)
            rows = [(threshold, p) for p in scoring.score_serialized(export.score, export.spec, serialized)]
        self.count(PREDICTIONS_COUNTER, len(rows))
        yield from rows


def predictions_text(scored: list, class_names: tuple[str, ...] | None) -> tuple[str, int]:
    """(predict's CSV of `ScoreExamplesFn`'s outputs, its rows): the windows averaged per record as predict
    does, by `mean_per_record` (binary) or `multi_label_rows_per_record` (multi-label)."""
    threshold = scored[0][0] if scored else math.nan  # no window, no record: the threshold is not used
    if class_names is not None:
        rows = multi_label_rows_per_record([rid for _, (rid, _, _) in scored], [p for _, (_, p, _) in scored],
                                           threshold)
        return multi_label_csv_text(class_names, rows), len(rows)
    records = mean_per_record([p for _, p in scored], threshold)
    return csv_text(records), len(records)


class _WriteCsvFn(TallyingDoFn):
    """All the scored examples -> `path` (one file), counting its rows."""

    def __init__(self, path: str, class_names: tuple[str, ...] | None):
        self._path = path
        self._class_names = class_names

    def process(self, scored: list):
        text, rows = predictions_text(scored, self._class_names)
        with FileSystems.create(self._path) as handle:
            handle.write(text.encode("utf-8"))
        self.count(RECORDS_SCORED_COUNTER, rows)
        yield self._path


class Scores(typing.NamedTuple):
    """What `ScoreToCsv` gives: the path of predictions.csv once written, and its counts as tallies."""

    written: beam.PCollection
    tallies: list


@beam.ptransform_fn
def ScoreToCsv(examples, model: ScoringModel, path: str):  # noqa: N802 (a PTransform, named like one)
    """Serialized examples -> `path`, predict's CSV of them (one file, one row per record sorted by record id).

    The rows are gathered on one worker to be averaged and sorted: about 60 bytes a window, 60 MB for a million.
    Returns `Scores`: the written file's path (once written) and the counts (`counts.py`)."""
    scored = (examples
              | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=model.batch_size)
              | "Score" >> beam.ParDo(ScoreExamplesFn(model.export_dir)).with_outputs(TALLY_TAG, main="rows"))
    written = (scored["rows"] | "Gather" >> beam.combiners.ToList()
               | "WriteCsv" >> beam.ParDo(_WriteCsvFn(path, model.class_names)).with_outputs(TALLY_TAG, main="path"))
    return Scores(written["path"], [scored[TALLY_TAG], written[TALLY_TAG]])
