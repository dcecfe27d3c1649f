"""One training run: the only place that wires data, model, callbacks, threshold and export together.

`run(data_dir, model_dir, config, extra_data)` reads `data_dir/train` (the pipeline's output) and the
published, labelled batches under each `extra_data` root normalized with the same transform
(`trainer.sources`), holds out a validation share by record id, trains with class weights and early
stopping on validation AUC, picks the decision threshold on validation, and writes into `model_dir`:
    serving/<n>/   a new SavedModel version (raw ECG -> P(abnormal) and the thresholded label; older
                   versions are kept), see `trainer.export`
    model.keras    the Keras model (best weights), for inspection or fine-tuning
    metrics.json   validation metrics per record (its windows averaged, as predict does) at the threshold
                   with their counts, bootstrap 95% intervals and
                   reliability (`evaluation.validation_metrics`), the threshold, class counts, epochs run
    validation_predictions.csv   true_label,probability of every validation record, its windows' mean (for the ROC)
    decoding.json  the decoding options of the training data (from its run_summary.json), for predict --records
    report/        index.html with learning curves, ROC, confusion matrix, histograms (`trainer.report`)
    logs/          TensorBoard event files (train/ and validation/)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ecg_common.rejections import ConfigurationError
from ecg_common.schema import ABNORMAL, CLASS_NAMES, ECG_KEY, LABEL_KEY, NORMAL, RECORD_ID_KEY, UNKNOWN_LABEL
from trainer import evaluation, export, inputs, report, sources
from trainer.config import TrainConfig
from trainer.layout import (LOGS_DIR, METRICS_FILE, MODEL_FILE, VALIDATION_PREDICTIONS_FILE, adopt_unversioned_export,
                            write_decoding_options, write_validation_predictions)
from trainer.model import build_model

_log = logging.getLogger(__name__)


class ScalarSummaries(keras.callbacks.Callback):
    """Epoch metrics as TensorBoard scalars, in the layout of `keras.callbacks.TensorBoard`.

    Keras' own callback needs the `tensorboard` package for `tf.summary.scalar`, and the project's
    pinned environment does not have it. `tf.summary.write` with the scalars plugin's metadata is
    part of TensorFlow and produces the same event files, which TensorBoard reads as usual.
    """

    _METADATA = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)

    def __init__(self, log_dir: str):
        super().__init__()
        self._writers = {split: tf.summary.create_file_writer(os.path.join(log_dir, split))
                         for split in ("train", "validation")}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            split, tag = ("validation", name[len("val_"):]) if name.startswith("val_") else ("train", name)
            with self._writers[split].as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value), tf.float32), step=epoch,
                                 metadata=self._METADATA)

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()


class TrainingThroughput(keras.callbacks.Callback):
    """Training-only time per epoch (validation excluded), to compare with the input pipeline alone."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self.epoch_steps: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._steps, self._end = time.perf_counter(), 0, None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(self._end - self._start)
        self.epoch_steps.append(self._steps)

    def steps_per_second(self) -> float:
        """Median over epochs after the first (the first includes tracing and filling the cache)."""
        pairs = list(zip(self.epoch_steps, self.epoch_seconds))[1:] or list(zip(self.epoch_steps, self.epoch_seconds))
        return float(np.median([steps / seconds for steps, seconds in pairs]))


def set_seed(seed: int, deterministic: bool) -> None:
    """Seeds Python, numpy and TF; optionally makes TF ops deterministic (process-wide, cannot be undone)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _check_main_records(records: list[inputs.Record]) -> None:
    unknown = sum(record.label == UNKNOWN_LABEL for record in records)
    if unknown:
        raise ConfigurationError(f"{unknown} of {len(records)} training examples have no label")


def _check_class_counts(records: list[inputs.Record]) -> None:
    counts = inputs.class_counts(records)
    if min(counts.values()) < 2:
        raise ConfigurationError(f"training needs at least 2 examples of each class, got {_named(counts)}")


def _named(counts: dict[int, int]) -> dict[str, int]:
    return {CLASS_NAMES[label]: count for label, count in counts.items()}


def class_weights(counts: dict[int, int]) -> dict[int, float]:
    """Balanced weights n / (classes * n_class): each class contributes equally to the loss."""
    total = sum(counts.values())
    return {label: total / (len(counts) * count) for label, count in counts.items()}


def _predict(model: keras.Model, batches: tf.data.Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(record ids, labels, probabilities) per example (window) over finite parsed batches, in their order."""
    ids, labels, scores = [], [], []
    for batch in batches:
        scores.append(model(batch[ECG_KEY], training=False).numpy().reshape(-1))
        labels.append(batch[LABEL_KEY].numpy().reshape(-1))
        ids += [rid.decode("utf-8") for rid in batch[RECORD_ID_KEY].numpy()]
    return ids, np.concatenate(labels).astype(np.int64), np.concatenate(scores)


def _clear_previous_run(model_dir: str) -> None:
    """The logs hold one run (stale event files would mix with the new ones); serving versions are kept,
    and an export of the former unversioned layout becomes version 0 rather than being deleted."""
    shutil.rmtree(os.path.join(model_dir, LOGS_DIR), ignore_errors=True)
    os.makedirs(model_dir, exist_ok=True)
    adopted = adopt_unversioned_export(model_dir)
    if adopted:
        _log.info("moved the unversioned export of an earlier trainer to %s", adopted)


def _training_set(data_dir: str, extra_data: Sequence[str], val_fraction: float
                  ) -> tuple[list[inputs.Source], inputs.TrainingSet, list[sources.Refusal]]:
    """The sources read (the main output first), the examples chosen from them, and the refused batches."""
    main = sources.main_source(data_dir)
    batches, refused = sources.extra_sources(list(extra_data), data_dir)
    read = [main, *batches]
    scanned = [inputs.scan_records(list(source.files)) for source in read]
    _check_main_records(scanned[0])
    training_set = inputs.combine(read, scanned, val_fraction)
    for counts in training_set.per_source[1:]:
        if not counts["used"]:
            _log.warning("%s: no example used (%d unlabelled, %d superseded by a newer batch)", counts["path"],
                         counts["unlabelled"], counts["superseded"])
    _check_class_counts(training_set.records)
    return read, training_set, refused


def _data_record(training_set: inputs.TrainingSet, refused: list[sources.Refusal]) -> dict:
    """metrics.json's `training_data`: what each folder contributed, and which batches were refused and why."""
    return {"sources": training_set.per_source,
            "refused": [{"path": refusal.path, "reason": refusal.reason} for refusal in refused]}


def run(data_dir: str, model_dir: str, config: TrainConfig = TrainConfig(), extra_data: Sequence[str] = ()) -> dict:
    """Trains, picks the threshold, exports a new serving version; returns what is written to metrics.json."""
    started = time.perf_counter()
    set_seed(config.seed, config.deterministic)
    tft_output = inputs.load_transform_output(data_dir)
    spec = inputs.parsing_spec(tft_output)
    read, training_set, refused = _training_set(data_dir, extra_data, config.val_fraction)

    records, held_out = training_set.records, training_set.held_out
    train_records = [r for r in records if r.record_id not in held_out]
    val_records = [r for r in records if r.record_id in held_out]
    train_counts, val_counts = inputs.class_counts(train_records), inputs.class_counts(val_records)
    weights = class_weights(train_counts)
    cache = inputs.fits_in_memory(training_set.examples_read, spec)  # else every epoch streams from the shards
    _log.info("train %s, validation %s from %d folder(s), class weights %s, cache %s",
              _named(train_counts), _named(val_counts), len(read), weights, cache)

    files = [path for source in read for path in source.files]
    file_sources = [index for index, source in enumerate(read) for _ in source.files]
    examples = inputs.read_examples(files, shuffle=True, seed=config.seed, cache=cache, file_sources=file_sources,
                                    exclude=training_set.exclude)
    if cache:
        inputs.fill_cache(examples)
    # Split by record: every window of a validation record is held out (`held_out` holds record ids).
    train_ds = inputs.to_keras(inputs.input_fn(
        examples, spec, config.batch_size, record_ids={r.record_id for r in train_records}, shuffle=True,
        seed=config.seed, shuffle_buffer=min(len(train_records), 1024), num_examples=len(train_records)))
    val_batches = inputs.input_fn(examples, spec, config.batch_size, record_ids=held_out,
                                  num_examples=len(val_records))
    val_ds = inputs.to_keras(val_batches)

    _clear_previous_run(model_dir)
    model = build_model(config.filters, config.kernel_size, config.dropout, config.learning_rate,
                        input_shape=tuple(spec[ECG_KEY].shape))  # the geometry the data was built with
    throughput = TrainingThroughput()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience,
                                                   restore_best_weights=True)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, class_weight=weights, verbose=2,
                        shuffle=False,  # the input pipeline shuffles (seeded); Keras cannot shuffle a tf.data set
                        callbacks=[early_stopping, throughput, ScalarSummaries(os.path.join(model_dir, LOGS_DIR))])
    training_seconds = time.perf_counter() - started

    # Per record, as predict decides: a record's windows are averaged before the threshold is chosen.
    threshold, validation, per_record = evaluation.record_validation(*_predict(model, val_batches),
                                                                     config.threshold_criterion)
    val_auc_history = history.history["val_auc"]
    metrics = {
        "threshold": threshold,
        "threshold_criterion": config.threshold_criterion,
        "validation": validation,
        "class_counts": {"train": _named(train_counts), "validation": _named(val_counts)},
        "class_weight": {CLASS_NAMES[label]: weight for label, weight in weights.items()},
        "epochs_run": len(val_auc_history),
        "best_epoch": int(np.argmax(val_auc_history)) + 1,
        "training_seconds": round(training_seconds, 1),
        "train_steps_per_second": round(throughput.steps_per_second(), 3),
        "train_examples_per_second": round(throughput.steps_per_second() * config.batch_size, 1),
        "cached_in_memory": cache,
        "training_data": _data_record(training_set, refused),
        "config": dataclasses.asdict(config),
        "history": {name: [float(v) for v in values] for name, values in history.history.items()},
    }
    if not metrics["validation"]["reliable"]:
        _log.warning("validation metrics are %s", metrics["validation"]["caveat"])
    model.save(os.path.join(model_dir, MODEL_FILE))
    transform = {"data_dir": data_dir, sources.LEAD_STATISTICS_KEY: sources.lead_statistics(data_dir)}
    version, _ = export.export_serving_model(model, tft_output, threshold, model_dir, transform)
    metrics["serving_version"] = version
    write_validation_predictions(os.path.join(model_dir, VALIDATION_PREDICTIONS_FILE), per_record.labels,
                                 per_record.scores)
    write_decoding_options(model_dir, inputs.decoding_options(data_dir))  # predict --records decodes alike
    metrics["report"] = report.build_safely(model_dir, metrics)  # never raises: a report cannot cost the model
    with open(os.path.join(model_dir, METRICS_FILE), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def _with_interval(validation: dict, name: str) -> str:
    interval = validation.get("interval_95", {}).get(name)
    value = f"{validation[name]:.4f}"
    return f"{value} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else value


def summary_line(metrics: dict) -> str:
    """The console summary of a run: the validation figures with their 95% intervals, the class counts
    they come from, and the caveat when those counts are too small to trust."""
    val = metrics["validation"]
    line = (f"validation AUC {_with_interval(val, 'auc')}, F1 {_with_interval(val, 'f1')}, accuracy "
            f"{_with_interval(val, 'accuracy')} (95% intervals) at threshold {metrics['threshold']:.4f}, from "
            f"{val['negatives']} {CLASS_NAMES[NORMAL]} and {val['positives']} {CLASS_NAMES[ABNORMAL]} records; "
            f"{metrics['epochs_run']} epochs, {metrics['training_seconds']} s")
    data = metrics.get("training_data")
    if data and (len(data["sources"]) > 1 or data["refused"]):
        batches = len(data["sources"]) - 1
        line += (f"; {sum(s['used'] for s in data['sources'])} examples from the main output and {batches} "
                 f"batch{'' if batches == 1 else 'es'} ({len(data['refused'])} refused)")
    if "serving_version" in metrics:
        line += f"; serving version {metrics['serving_version']}"
    return line if val.get("reliable", True) else f"{line}; {val['caveat']}"
