"""Transformed Arrow batches -> serialized `tf.train.Example`s, with tfx_bsl's C++ encoder.

Used instead of `tft_beam.EncodeTransformedDataset`, which fails after `ReadTransformFn` in TFT 1.21
(`'DatasetMetadata' object has no attribute 'deferred_metadata'`); TFX encodes the same way.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tfx_bsl.public import tfxio

from beam_pipeline.graph import demographics
from beam_pipeline.graph.arrow_batches import drop_unknown_labels
from beam_pipeline.graph.read import METRICS_NAMESPACE
from ecg_common.schema import WINDOW_INDEX_KEY


class EncodeExamplesFn(beam.DoFn):
    """(RecordBatch, passthrough) from `TransformDataset` -> serialized examples, counted per split:
    examples (windows) and records (files: each written record has exactly one window 0)."""

    def __init__(self, transformed_schema, split: str):
        self._schema = transformed_schema
        self._split = split

    def setup(self) -> None:
        self._encoder = tfxio.RecordBatchToExamplesEncoder(self._schema)
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{self._split}_examples_written")
        self._records = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{self._split}_records_written")
        self._demographics = {name: beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)
                              for name in demographics.counter_names(self._split)}

    def process(self, transformed):
        batch, _ = transformed
        examples = self._encoder.encode(drop_unknown_labels(batch))
        self._written.inc(len(examples))
        self._records.inc(first_windows(batch))
        for name, count in demographics.count_batch(batch, self._split).items():
            self._demographics[name].inc(count)
        yield from examples


def first_windows(batch: pa.RecordBatch) -> int:
    """How many rows are the first window of their record (all rows, for a transform without windows)."""
    index = batch.schema.get_field_index(WINDOW_INDEX_KEY)
    if index < 0:
        return batch.num_rows
    values = batch.column(index).flatten().to_numpy(zero_copy_only=False)
    return int(np.count_nonzero(values == 0))
