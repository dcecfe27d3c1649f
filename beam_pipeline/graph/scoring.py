"""Nightly scoring in the Beam graph: the batch's serialized examples -> the exported model's
`transformed` signature -> `predictions.csv`, in the same pass that writes the TFRecords.

The examples scored are the very bytes written to the shards, parsed and scored by
`ecg_common.scoring` (the functions `trainer.predict` uses), and the CSV is written by
`ecg_common.predictions.csv_text` (predict's writer): a batch's `predictions.csv` is what
`python -m trainer.predict --data_dir ROOT/batch-X --split data` writes for it.

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

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.shared import Shared

from beam_pipeline.graph.read import METRICS_NAMESPACE
from beam_pipeline.graph.settings import ScoringModel
from ecg_common import scoring
from ecg_common.predictions import Prediction, csv_text

PREDICTIONS_COUNTER = "predictions_written"


class _LoadedExport:
    """A loaded export, its `transformed` signature and the spec its examples are parsed with.

    Holds `loaded`: a signature does not own the variables it reads."""

    def __init__(self, export_dir: str):
        self.loaded = tf.saved_model.load(export_dir)
        self.score = scoring.transformed_scorer(self.loaded, export_dir)
        self.spec = scoring.parsing_spec(scoring.export_feature_spec(export_dir))


class ScoreExamplesFn(beam.DoFn):
    """A list of serialized transformed examples -> one Prediction per example."""

    def __init__(self, export_dir: str):
        self._export_dir = export_dir
        self._shared = Shared()

    def setup(self) -> None:
        self._export = self._shared.acquire(lambda: _LoadedExport(self._export_dir))
        self._scored = beam.metrics.Metrics.counter(METRICS_NAMESPACE, PREDICTIONS_COUNTER)

    def process(self, serialized: list[bytes]):
        predictions = scoring.score_serialized(self._export.score, self._export.spec, serialized)
        self._scored.inc(len(predictions))
        yield from predictions


def _write_csv(predictions: list[Prediction], path: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(csv_text(predictions).encode("utf-8"))


@beam.ptransform_fn
def ScoreToCsv(examples, model: ScoringModel, path: str):  # noqa: N802 (a PTransform, named like one)
    """Serialized examples -> `path`, predict's CSV of them (one file, rows sorted by record id).

    The rows are gathered on one worker to be sorted: about 60 bytes a record, 60 MB for a million."""
    return (examples
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=model.batch_size)
            | "Score" >> beam.ParDo(ScoreExamplesFn(model.export_dir))
            | "Gather" >> beam.combiners.ToList()
            | "WriteCsv" >> beam.Map(_write_csv, path))
