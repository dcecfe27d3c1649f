"""Multi-label runs (#12): learning the classes, writing `classes.txt` and `class_codes.tsv`, reading
them back for reprocessing, and the classes part of the run summary.

The class list must be fixed before the main job's graph is built (the `labels` multi-hot has K
values), so without `--classes` a small job learns it first with tf.Transform's vocabulary over the
training split (`graph.pipeline.build_vocabulary`); test splits and nightly batches are then mapped
with that list, and their codes outside it are ignored and counted.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzers as tft_analyzers
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.graph import pipeline as graphs
from beam_pipeline.graph.encode import UNLABELLED
from beam_pipeline.graph.read import CLASS_COUNTER, IGNORED_COUNTER, UNLABELLED_COUNTER
from beam_pipeline.graph.settings import InputSpec
from beam_pipeline.inputs.classes import ClassMap, identity_classes, parse_classes
from ecg_common.layout import CLASS_CODES_FILE, CLASS_VOCABULARY, CLASSES_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import TRAIN_SPLIT


def learn_classes(options, inputs: InputSpec, decode: graphs.DecodeOptions, temp_dir: str) -> ClassMap:
    """The classes seen in at least `--min_class_count` valid training records, most frequent first.
    Runs its own small job (inside the caller's `tft_beam.Context`); no class at all is a
    configuration error."""
    vocabulary_dir = FileSystems.join(temp_dir, "class_vocabulary")
    with tft_beam.Context(temp_dir=FileSystems.join(temp_dir, "class_vocabulary_tmp")):
        pipeline = beam.Pipeline(options=options)
        graphs.build_vocabulary(pipeline, inputs, decode, vocabulary_dir)
        pipeline.run().wait_until_finish()
    # tf.Transform writes one placeholder token for an empty vocabulary (its tables cannot be empty).
    empty = tft_analyzers.get_empy_vocabulary_dummy_value(tf.string)[1]
    names = [v.decode("utf-8") for v in tft.TFTransformOutput(vocabulary_dir).vocabulary_by_name(CLASS_VOCABULARY)
             if v != empty]
    if not names:
        raise ConfigurationError(f"no class is carried by at least {decode.labelling.min_class_count} training "
                                 "records (--min_class_count); nothing to learn")
    return identity_classes(names)


def write_classes(out_dir: str, classes: ClassMap) -> None:
    """`OUT/classes.txt` (the names, in the order of `labels`) and `OUT/class_codes.tsv` (the mapping)."""
    for name, text in ((CLASSES_FILE, "".join(f"{n}\n" for n in classes.names)), (CLASS_CODES_FILE, classes.to_text())):
        with FileSystems.create(FileSystems.join(out_dir, name)) as handle:
            handle.write(text.encode("utf-8"))


def training_classes(transform_dir: str) -> ClassMap | None:
    """The classes of the training run whose output is `transform_dir`, or None for a binary run."""
    path = FileSystems.join(transform_dir, CLASS_CODES_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return parse_classes(handle.read().decode("utf-8"), source=path)


def _with_prefix(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix):]: n for name, n in sorted(counts.items()) if name.startswith(prefix)}


def class_summary(all_counts: Mapping[str, int], classes: ClassMap, splits: Iterable[str]) -> tuple[dict, dict]:
    """(`run_summary.json`'s `classes`, its `class_balance`) from the job's counts: the class names,
    records per class and split (the training ones also apart), the codes ignored per split with
    their record counts."""
    counts = _with_prefix(all_counts, CLASS_COUNTER)
    ignored = _with_prefix(all_counts, IGNORED_COUNTER)
    unlabelled = _with_prefix(all_counts, UNLABELLED_COUNTER)
    balance = {split: {name: counts.get(f"{split}/{name}", 0) for name in classes.names}
               | {UNLABELLED: unlabelled.get(split, 0)} for split in splits}
    ignored_by_split = {split: {key.split("/", 1)[1]: n for key, n in ignored.items() if key.startswith(f"{split}/")}
                        for split in splits}
    summary = {"names": list(classes.names), "codes": {n: list(c) for n, c in classes.codes.items()},
               "training_records": {n: balance.get(TRAIN_SPLIT, {}).get(n, 0) for n in classes.names},
               "ignored_codes": ignored_by_split}
    return summary, balance
