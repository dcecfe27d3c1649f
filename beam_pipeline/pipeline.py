"""The Beam wiring: the path of a record from file to TFRecord, and nothing else.

Two pipelines, as the memory measurements in the README explain:
  analyze:   sources -> decode -> Arrow batches -> AnalyzeDataset           -> transform_fn
  transform: sources -> decode -> Arrow batches -> TransformDataset -> encode -> TFRecord shards
                          \\-> rejections -> errors/<split>.jsonl
Decoding twice (once per pass) from a small PCollection of file names keeps memory flat, where
holding decoded records between the passes would grow with the data set.
"""
from __future__ import annotations

import dataclasses
import os

import apache_beam as beam
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from beam_pipeline.arrow_batches import tensor_adapter_config, to_record_batch
from beam_pipeline.discovery import RecordSource
from beam_pipeline.encode import EncodeExamplesFn
from beam_pipeline.preprocessing import preprocessing_fn
from beam_pipeline.read import REJECTED_TAG, DecodeRecordFn
from beam_pipeline.rejections import Rejection
from beam_pipeline.tfrecord_sink import WriteGzipTFRecords

DECODED_TAG = "decoded"
ERRORS_DIR = "errors"
SHARD_PREFIX = "part"
TFRECORD_SUFFIX = ".tfrecord.gz"


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """What decoding and batching need to know; the same for both passes."""

    default_sampling_rate: float
    pad_short: bool
    batch_size: int


class DecodeAndBatch(beam.PTransform):
    """RecordSources -> (Arrow record batches, rejections)."""

    def __init__(self, options: DecodeOptions):
        super().__init__()
        self._options = options

    def expand(self, sources):
        outcome = sources | "Decode" >> beam.ParDo(
            DecodeRecordFn(self._options.default_sampling_rate, self._options.pad_short)
        ).with_outputs(REJECTED_TAG, main=DECODED_TAG)
        batch_size = self._options.batch_size
        batches = (outcome[DECODED_TAG]
                   | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
                   | "ToArrow" >> beam.Map(to_record_batch))
        return batches, outcome[REJECTED_TAG]


@beam.ptransform_fn
def WriteRejections(rejections, path_prefix: str):  # noqa: N802 (a PTransform, named like one)
    """Rejections -> one JSON object per line in `<path_prefix>.jsonl` (an empty file when none)."""
    return (rejections
            | "ToJson" >> beam.Map(Rejection.to_json)
            | "WriteErrors" >> beam.io.WriteToText(path_prefix, file_name_suffix=".jsonl", shard_name_template=""))


def build_analyze(pipeline: beam.Pipeline, train: list[RecordSource], options: DecodeOptions, out_dir: str) -> None:
    """Learns the per-lead statistics over the training records and writes `out_dir/transform_fn`."""
    batches, _ = pipeline | "CreateTrain" >> beam.Create(train) | "DecodeTrain" >> DecodeAndBatch(options)
    transform_fn = (batches, tensor_adapter_config()) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out_dir)


def build_transform(pipeline: beam.Pipeline, splits: dict[str, list[RecordSource]], extra_rejections: list[Rejection],
                    options: DecodeOptions, transform_dir: str, out_dir: str, num_shards: int, gzip_level: int) -> None:
    """Applies the transform saved in `transform_dir` to every split; writes `out_dir/<split>/part-*.tfrecord.gz`
    and `out_dir/errors/`. The statistics are frozen: nothing is re-analyzed here."""
    transformed_schema = tft.TFTransformOutput(transform_dir).transformed_metadata.schema
    transform_fn = pipeline | "ReadTransformFn" >> tft_beam.ReadTransformFn(transform_dir)
    for split, sources in splits.items():
        batches, rejections = (pipeline | f"Create[{split}]" >> beam.Create(sources)
                               | f"Decode[{split}]" >> DecodeAndBatch(options))
        transformed, _ = (((batches, tensor_adapter_config()), transform_fn)
                          | f"Transform[{split}]" >> tft_beam.TransformDataset(output_record_batches=True))
        _ = (transformed
             | f"Encode[{split}]" >> beam.ParDo(EncodeExamplesFn(transformed_schema, split))
             | f"Write[{split}]" >> WriteGzipTFRecords(os.path.join(out_dir, split, SHARD_PREFIX), TFRECORD_SUFFIX,
                                                      num_shards, gzip_level))
        _ = rejections | f"Errors[{split}]" >> WriteRejections(os.path.join(out_dir, ERRORS_DIR, split))
    _ = (pipeline | "CreateLabelFindings" >> beam.Create(extra_rejections)
         | "Errors[labels]" >> WriteRejections(os.path.join(out_dir, ERRORS_DIR, "labels")))
