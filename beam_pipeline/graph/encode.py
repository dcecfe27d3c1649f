"""Transformed Arrow batches -> serialized `tf.train.Example`s, with tfx_bsl's C++ encoder.

Used instead of `tft_beam.EncodeTransformedDataset`, which fails after `ReadTransformFn` in TFT 1.21
(`'DatasetMetadata' object has no attribute 'deferred_metadata'`); TFX encodes the same way.
"""
from __future__ import annotations

import apache_beam as beam
from tfx_bsl.public import tfxio

from beam_pipeline.graph.arrow_batches import drop_unknown_labels
from beam_pipeline.graph.read import METRICS_NAMESPACE


class EncodeExamplesFn(beam.DoFn):
    """(RecordBatch, passthrough) from `TransformDataset` -> serialized examples, counted per split."""

    def __init__(self, transformed_schema, split: str):
        self._schema = transformed_schema
        self._split = split

    def setup(self) -> None:
        self._encoder = tfxio.RecordBatchToExamplesEncoder(self._schema)
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{self._split}_examples_written")

    def process(self, transformed):
        batch, _ = transformed
        examples = self._encoder.encode(drop_unknown_labels(batch))
        self._written.inc(len(examples))
        yield from examples
