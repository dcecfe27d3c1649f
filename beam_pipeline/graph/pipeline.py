"""The Beam wiring: the path of a record from file to TFRecord, and nothing else.

The main command's job (`build_job`) is one pipeline that finds its records itself (`sources.py`:
the graph holds the input directories and the labels file's path, never the file list) and then
makes two passes over them:
  analyze:   train sources -> decode -> Arrow batches -> AnalyzeDataset -> transform_fn (written)
  transform: sources -> decode -> Arrow batches -> TransformDataset(transform_fn) -> encode -> TFRecord shards
                \\-> rejections -> errors/<split>.jsonl
                \\-> quality findings -> quality/<split>.jsonl
The transform pass decodes the files again rather than reusing the analyze pass's records: holding
decoded records between the passes would grow memory with the data set, while decoding a file
again costs a fraction of a millisecond. Reprocessing (`build_transform`) runs the transform pass
alone, with a transform_fn read from disk, and with `--model_dir` scores the encoded examples too:
                encode -> TFRecord shards
                   \\-> the model (scoring.py) -> predictions.csv
A multi-label run without `--classes` first runs a small job of its own (`build_vocabulary`: train
sources -> decode -> AnalyzeDataset(vocabulary_fn)) so the class list, and with it the width K of
`labels`, is fixed when the main job's graph is built.
"""
from __future__ import annotations

import dataclasses
import os
import typing
import uuid
from collections.abc import Callable, Mapping

import apache_beam as beam
import pyarrow as pa
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from beam_pipeline.graph.arrow_batches import DecodedRecord, tensor_adapter_config, to_record_batch
from beam_pipeline.graph.encode import EncodeExamplesFn
from beam_pipeline.graph.counts import TALLY_TAG
from beam_pipeline.graph.finish import finish_in_job, sum_tallies
from beam_pipeline.graph.preprocessing import multi_label_preprocessing_fn, preprocessing_fn, vocabulary_fn
from beam_pipeline.graph.progress import ProgressKey
from beam_pipeline.graph.read import QUALITY_TAG, REJECTED_TAG, DecodeRecordFn
from beam_pipeline.graph.scoring import ScoreToCsv
from beam_pipeline.graph.settings import DecodeOptions, InputSpec, Labelling, ScoringModel, WriteOptions
from beam_pipeline.graph.sources import FindSources, write_candidates
from beam_pipeline.graph.tfrecord_sink import WriteGzipTFRecords
from beam_pipeline.inputs.discovery import RecordSource
from ecg_common.layout import ERRORS_DIR, LABELS_FINDINGS, QUALITY_DIR, SHARD_PREFIX, TFRECORD_SUFFIX
from ecg_common.predictions import PREDICTIONS_FILE
from ecg_common.schema import TRAIN_SPLIT

DECODED_TAG = "decoded"


@dataclasses.dataclass
class Transformed:
    """What the transform pass gives: per split the raw (decoded) Arrow batches and the encoded
    examples, the counts it tallied, and the results of its writes (for a step that must follow them)."""

    raw_batches: dict[str, beam.PCollection]
    encoded: dict[str, beam.PCollection]
    tallies: list[beam.PCollection]
    done: list[beam.PCollection]


class Decoded(typing.NamedTuple):
    """What `DecodeAndBatch` gives: Arrow record batches, rejections, quality findings, and the counts
    it tallied (multi-label classes, `finish.py`)."""

    batches: beam.PCollection
    rejections: beam.PCollection
    findings: beam.PCollection
    tally: beam.PCollection


class DecodeAndBatch(beam.PTransform):
    """RecordSources -> `Decoded` (Arrow record batches, rejections, quality findings, counts).

    `assess_quality=False` skips the quality flags where nobody reads them (the analyze pass, unless
    flagged records are rejected and so must be left out of the statistics too)."""

    def __init__(self, options: DecodeOptions, assess_quality: bool = True, count_classes: bool = True,
                 progress_key: ProgressKey | None = None):
        super().__init__()
        self._progress_key = progress_key
        self._options = options
        self._assess_quality = assess_quality
        self._count_classes = count_classes

    def expand(self, sources):
        labelling = self._options.labelling
        outcome = sources | "Decode" >> beam.ParDo(
            DecodeRecordFn(self._options.default_sampling_rate, self._options.pad_short, self._options.limits,
                           self._options.reject_flagged, self._assess_quality, labelling, self._count_classes,
                           self._options.geometry, self._options.window_stride_s, self._progress_key)
        ).with_outputs(REJECTED_TAG, QUALITY_TAG, TALLY_TAG, main=DECODED_TAG)
        batch_size = self._options.batch_size
        batches = (outcome[DECODED_TAG]
                   | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size
                                                   ).with_output_types(typing.List[DecodedRecord])
                   | "ToArrow" >> beam.Map(to_record_batch, multi_label=labelling.multi_label
                                           ).with_output_types(pa.RecordBatch))
        return Decoded(batches, outcome[REJECTED_TAG], outcome[QUALITY_TAG], outcome[TALLY_TAG])


@beam.ptransform_fn
def WriteJsonLines(items, path_prefix: str):  # noqa: N802 (a PTransform, named like one)
    """Rejections or quality findings -> one JSON object per line in `<path_prefix>.jsonl` (an empty
    file when none). Record ids and paths from the input are JSON data here, never file names."""
    return (items
            | "ToJson" >> beam.Map(lambda item: item.to_json())
            | "WriteErrors" >> beam.io.WriteToText(path_prefix, file_name_suffix=".jsonl", shard_name_template=""))


def _preprocessing_fn(labelling: Labelling):
    if not labelling.multi_label:
        return preprocessing_fn
    return multi_label_preprocessing_fn(labelling.classes.names)


def _analyze(train: beam.PCollection, options: DecodeOptions, token: str):
    """Learns the per-lead statistics over the training records: TFT's (transform_fn, transformed metadata).
    The sources rejected before decoding pass through the decode step too (as rejections, which this
    pass drops), so its progress counts every file found."""
    batches = (train | "DecodeTrain" >> DecodeAndBatch(options, assess_quality=options.reject_flagged,
                                                       count_classes=False,
                                                       progress_key=ProgressKey(token, TRAIN_SPLIT, "analyze"))
               ).batches
    return ((batches, tensor_adapter_config(options.geometry, options.labelling.multi_label))
            | "Analyze" >> tft_beam.AnalyzeDataset(_preprocessing_fn(options.labelling)))


def build_vocabulary(pipeline: beam.Pipeline, inputs: InputSpec, options: DecodeOptions, vocabulary_dir: str) -> None:
    """A multi-label run without --classes, before `build_job`: learns the classes over the valid training
    sources (tf.Transform's vocabulary, `preprocessing.vocabulary_fn`) into `vocabulary_dir`. The main
    job then maps every split with this fixed list, so K is known when its graph is built."""
    learning = dataclasses.replace(options, labelling=dataclasses.replace(options.labelling, classes=None))
    token = uuid.uuid4().hex
    train_only = dataclasses.replace(inputs, directories={TRAIN_SPLIT: inputs.directories[TRAIN_SPLIT]})
    found = pipeline | "FindTrain" >> FindSources(train_only, token)
    batches = (found.by_split[TRAIN_SPLIT]
               | "DecodeTrain" >> DecodeAndBatch(learning, assess_quality=options.reject_flagged, count_classes=False,
                                                 progress_key=ProgressKey(token, TRAIN_SPLIT, "classes"))).batches
    transform_fn = ((batches, tensor_adapter_config(options.geometry, multi_label=True))
                    | "LearnClasses" >> tft_beam.AnalyzeDataset(vocabulary_fn(options.labelling.min_class_count)))
    _ = transform_fn | "WriteClasses" >> tft_beam.WriteTransformFn(vocabulary_dir)


def build_job(pipeline: beam.Pipeline, inputs: InputSpec, options: DecodeOptions, out_dir: str,
              write: WriteOptions = WriteOptions(), candidates_path: str | None = None,
              finish: Callable[[Mapping[str, int], list], None] | None = None) -> None:
    """The main command's job, both passes in one pipeline: finds the records of every split inside
    the job (`sources.py`), learns the statistics over the valid training sources and writes
    `out_dir/transform_fn`, then applies them to every split (as `build_transform`). With
    `candidates_path`, the first training sources by path go there for the run report to draw from.
    With `finish` (`--publish_in_job`), the job's last step calls it with the job's counts and those
    sources, once every output is written (`finish.py`).

    The transform pass reads the files again rather than reusing the decoded records, and only waits
    for the (small) transform_fn as a side input: nothing large is held between the passes, and worker
    processes (multi_processing, Dataflow) start once for both."""
    token = uuid.uuid4().hex
    found = pipeline | "FindSources" >> FindSources(inputs, token)
    if candidates_path is not None:
        _ = write_candidates(found.report_candidates, candidates_path)
    transform_fn = _analyze(found.by_split[TRAIN_SPLIT], options, token)
    written_transform = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out_dir)
    _, transformed_metadata = transform_fn
    transformed = _transform_splits(transform_fn, transformed_metadata.dataset_metadata.schema, found.by_split,
                                    found.label_findings, options, out_dir, write, token)
    if finish is not None:
        tally = sum_tallies(found.tallies + transformed.tallies)
        _ = finish_in_job(pipeline, tally, found.report_candidates, [written_transform, *transformed.done], finish)


def build_transform(pipeline: beam.Pipeline, sources: dict[str, beam.PCollection], label_findings: beam.PCollection,
                    options: DecodeOptions, transform_dir: str, out_dir: str, token: str,
                    write: WriteOptions = WriteOptions(),
                    model: ScoringModel | None = None) -> Transformed:
    """Applies the transform saved in `transform_dir` to every split's `sources` (reprocessing: the
    records `selection.py` selected inside the job); writes `out_dir/<split>/part-*.tfrecord.gz`,
    `out_dir/errors/` (with `label_findings`) and `out_dir/quality/`. The statistics are frozen:
    nothing is re-analyzed here. With `model` (one split only: a reprocessed batch), the examples
    written are also scored into `out_dir/predictions.csv`. `token`: the selection's, for the progress lines.

    Returns the transform pass's `Transformed` (with the scoring's counts and write): its raw
    (decoded, untransformed) Arrow batches are for callers that measure the raw signal in the same
    pass (the drift check of reprocessing)."""
    if model is not None and len(sources) != 1:
        raise ValueError("scoring writes one predictions.csv: give one split")
    transformed_schema = tft.TFTransformOutput(transform_dir).transformed_metadata.schema
    transform_fn = pipeline | "ReadTransformFn" >> tft_beam.ReadTransformFn(transform_dir)
    transformed = _transform_splits(transform_fn, transformed_schema, sources, label_findings, options, out_dir,
                                    write, token)
    if model is not None:
        (examples,) = transformed.encoded.values()
        scores = examples | "Score" >> ScoreToCsv(model, os.path.join(out_dir, PREDICTIONS_FILE))
        transformed.tallies.extend(scores.tallies)
        transformed.done.append(scores.written)
    return transformed


def _after(source: RecordSource, _ready) -> RecordSource:
    """The source, once the transform_fn (a side input) exists. The transform pass decodes its files
    only after the analysis: the runner fuses a step into the one before it unless a side input
    stops it, and the sources reach both passes from one step (`sources.py`), so without this the
    transform pass would decode during the analysis and hold every decoded batch until the
    transform_fn came (measured: 9.7 GB at 10^4 records, against 1.3 GB)."""
    return source


def _transform_splits(transform_fn, transformed_schema, splits: dict[str, beam.PCollection],
                      label_findings: beam.PCollection, options: DecodeOptions, out_dir: str,
                      write: WriteOptions, token: str
                      ) -> Transformed:
    """Every split through the transform pass (`Transformed`)."""
    raw_batches, encoded, tallies, done = {}, {}, [], []
    transform_fn_ready = beam.pvalue.AsList(transform_fn[0])
    for split, sources in splits.items():
        waiting = sources | f"AfterAnalysis[{split}]" >> beam.Map(_after, transform_fn_ready)
        batches, rejections, findings, decode_tally = waiting | f"Decode[{split}]" >> DecodeAndBatch(
            options, progress_key=ProgressKey(token, split, "transform"))
        tallies.append(decode_tally)
        transformed, _ = (((batches, tensor_adapter_config(options.geometry, options.labelling.multi_label)),
                           transform_fn)
                          | f"Transform[{split}]" >> tft_beam.TransformDataset(output_record_batches=True))
        outputs = transformed | f"Encode[{split}]" >> beam.ParDo(EncodeExamplesFn(transformed_schema, split)
                                                                  ).with_outputs(TALLY_TAG, main="examples")
        encoded[split] = outputs["examples"]
        tallies.append(outputs[TALLY_TAG])
        done.append(encoded[split] | f"Write[{split}]" >> WriteGzipTFRecords(
            os.path.join(out_dir, split, SHARD_PREFIX), TFRECORD_SUFFIX, write.num_shards, write.gzip_level))
        done.append(rejections | f"Errors[{split}]" >> WriteJsonLines(os.path.join(out_dir, ERRORS_DIR, split)))
        done.append(findings | f"Quality[{split}]" >> WriteJsonLines(os.path.join(out_dir, QUALITY_DIR, split)))
        raw_batches[split] = batches
    done.append(label_findings | "Errors[labels]" >> WriteJsonLines(os.path.join(out_dir, ERRORS_DIR, LABELS_FINDINGS)))
    return Transformed(raw_batches, encoded, tallies, done)
