"""Multi-label training (#12): K sigmoid outputs over the classes of `OUT/classes.txt`.

The pipeline's multi-label output has `labels` (int64, K values, multi-hot in `classes.txt` order) in
every labelled example instead of `label`. `run` mirrors `train.run` for it:
- validation split: iterative stratification (Sechidis et al., 2011) over the classes, by record id,
  deterministic (ties by the id's sha256), so every class with two or more records is on both sides
  as far as the label combinations allow (`stratified_validation_ids`);
- loss: binary cross-entropy with a per-class positive weight n_neg / n_pos (`model.WeightedBinaryCrossentropy`),
  so a rare class is not learned as "always absent" (measured in docs/multi-label.md);
- early stopping on the validation macro AUC (Keras' AUC over K labels, averaged);
- per class a threshold chosen on validation (the `--threshold_criterion`), with its AUC and F1, per
  record (a record's windows averaged, as predict does: `record_validation`);
  macro AUC and macro F1 over the classes that have both outcomes in validation;
- export: the serving signatures return `probabilities` [batch, K] and `labels` [batch, K] (each class
  thresholded with its own value); `classes.txt` is copied into the model directory and the version;
- report: learning curves, the validation ROC of every class and the per-class table
  (`report.build_multilabel`).
`--extra_data` batches (reprocessed with the training transform, so with the same classes) join as
in binary training (`training_set`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from ecg_common import scoring
from ecg_common.layout import CLASSES_FILE
from ecg_common.predictions import multi_label_rows_per_record as rows_per_record
from ecg_common.rejections import ConfigurationError, Reason, Rejection
from ecg_common.schema import CLASSES_KNOWN, ECG_KEY, LABELS_KEY, RECORD_ID_KEY, UNKNOWN_LABEL
from trainer import evaluation, export, inputs, raw_records, report, sources
from trainer.config import TrainConfig
from trainer.layout import (LOGS_DIR, METRICS_FILE, MODEL_FILE, MULTILABEL_VALIDATION_PREDICTIONS_FILE,
                            read_decoding_options, write_decoding_options, write_multilabel_validation_predictions)
from trainer.model import build_model
from trainer.train import ScalarSummaries, TrainingThroughput, _clear_previous_run, set_seed

_log = logging.getLogger(__name__)


def is_multi_label(data_dir: str) -> bool:
    """Whether `data_dir` is a multi-label pipeline output (it has `classes.txt`)."""
    return tf.io.gfile.exists(os.path.join(data_dir, CLASSES_FILE))


def class_names(folder: str) -> tuple[str, ...]:
    """The class names of `folder/classes.txt` (a pipeline output, a model dir or an export), in order."""
    with tf.io.gfile.GFile(os.path.join(folder, CLASSES_FILE), "r") as handle:
        return tuple(line.strip() for line in handle.read().splitlines() if line.strip())


def parsing_spec(transformed: tft.TFTransformOutput | dict, num_classes: int) -> dict:
    """The transformed feature spec with a dense [K] `labels` (UNKNOWN_LABEL where an example has none)."""
    return scoring.multi_label_parsing_spec(transformed.transformed_feature_spec()
                                            if isinstance(transformed, tft.TFTransformOutput) else transformed,
                                            num_classes)


def scan(files: list[str], num_classes: int) -> tuple[list[str], np.ndarray]:
    """Every example's record id and labels ([N, K], rows of UNKNOWN_LABEL when unlabelled), in file order."""
    spec = {RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string),
            LABELS_KEY: parsing_spec({}, num_classes)[LABELS_KEY]}
    ids, rows = [], []
    for batch in inputs.read_examples(files).batch(256).map(lambda s: tf.io.parse_example(s, spec)).as_numpy_iterator():
        ids += [rid.decode("utf-8") for rid in batch[RECORD_ID_KEY]]
        rows.append(batch[LABELS_KEY])
    return ids, (np.concatenate(rows) if rows else np.zeros((0, num_classes), np.int64))


def stratified_validation_ids(ids: list[str], labels: np.ndarray, fraction: float) -> frozenset[str]:
    """Iterative stratification into validation (`fraction`) and training: the class with the fewest
    records left is placed first, each of its records going to the side that still wants most of that
    class (then most records overall, then training); records with no class fill the sizes last. A
    class of two or more records wants round(fraction * n) of them in validation, at least one and
    not all (as `inputs.validation_ids` does for the binary label).
    Depends only on the ids and their labels, not on file order."""
    if not 0.0 < fraction < 1.0:
        raise ConfigurationError(f"validation fraction must be in (0, 1), got {fraction}")
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(ids[i].encode("utf-8")).hexdigest())
    y = labels.astype(bool)
    counts = y.sum(axis=0)
    # As in the binary split: a class of two or more records wants at least one, never all, in validation.
    val_wanted = np.where(counts >= 2, np.clip(np.round(fraction * counts), 1, counts - 1), fraction * counts)
    wanted = np.stack([val_wanted, counts - val_wanted]).astype(np.float64)  # [side, class]
    size = np.array([fraction * len(ids), (1 - fraction) * len(ids)])
    side = np.full(len(ids), -1)
    remaining = y.copy()
    while remaining.any():
        counts = remaining.sum(axis=0)
        k = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for i in (i for i in order if remaining[i, k]):
            choice = max((0, 1), key=lambda s: (wanted[s, k], size[s], s))  # ties: training (side 1)
            side[i] = choice
            wanted[choice] -= y[i]
            size[choice] -= 1
            remaining[i] = False
    for i in (i for i in order if side[i] < 0):
        side[i] = max((0, 1), key=lambda s: (size[s], s))
        size[side[i]] -= 1
    return frozenset(ids[i] for i in range(len(ids)) if side[i] == 0)


@dataclasses.dataclass(frozen=True)
class MultiLabelSet:
    """The labelled examples of a multi-label run, each record id once (as `inputs.TrainingSet`)."""

    ids: list[str]
    labels: np.ndarray
    """[N, K], the multi-hot of each of `ids`."""
    held_out: frozenset[str]
    files: list[str]
    file_sources: list[int]
    exclude: frozenset[tuple[int, str]]
    per_source: list[dict]
    refused: list


def training_set(data_dir: str, extra_data: list[str], num_classes: int, fraction: float) -> MultiLabelSet:
    """The main output's train split and the labelled examples of the batches under `extra_data`
    (`--extra_data`, checked as for binary training by `sources.extra_sources`): a record id in several
    sources is taken from the newest that labels it (`inputs.combine`). The main output's records are
    split by `stratified_validation_ids`, a batch's other records by `inputs.held_out_by_id`, so a
    record keeps its side as batches arrive."""
    batches, refused = sources.extra_sources(extra_data, data_dir)
    read = [sources.main_source(data_dir), *batches]
    scanned = [scan(list(source.files), num_classes) for source in read]
    if (scanned[0][1] < 0).any():
        raise ConfigurationError(f"{int((scanned[0][1] < 0).any(axis=1).sum())} of {len(scanned[0][0])} training "
                                 "examples have no labels")
    records = [[inputs.Record(rid, CLASSES_KNOWN if row[0] >= 0 else UNKNOWN_LABEL) for rid, row in zip(*found)]
               for found in scanned]
    combined = inputs.combine(read, records, fraction)
    labels_of = {}
    for index, (found_ids, found_labels) in enumerate(scanned):
        for rid, row in zip(found_ids, found_labels):
            if row[0] >= 0 and (index, rid) not in combined.exclude:
                labels_of[rid] = row
    ids = [record.record_id for record in combined.records]
    labels = np.array([labels_of[rid] for rid in ids], dtype=np.int64).reshape(-1, num_classes)
    # One row per record: the windows of a record (`--window_stride_s`) share its labels and its side.
    per_record = dict(zip(scanned[0][0], scanned[0][1]))
    main_ids = list(per_record)
    main_labels = np.array(list(per_record.values()), dtype=np.int64).reshape(-1, num_classes)
    main_held_out = stratified_validation_ids(main_ids, main_labels, fraction)
    main_set = set(main_ids)
    held_out = frozenset(rid for rid in ids if (rid in main_held_out if rid in main_set
                                                else inputs.held_out_by_id(rid, fraction)))
    files = [path for source in read for path in source.files]
    file_sources = [index for index, source in enumerate(read) for _ in source.files]
    return MultiLabelSet(ids, labels, held_out, files, file_sources, combined.exclude, combined.per_source, refused)


def positive_weights(labels: np.ndarray) -> np.ndarray:
    """Per class n_negative / n_positive (1 for a class with no positive): the positives of each class
    weigh as much in the loss as its negatives."""
    positives = labels.sum(axis=0).astype(np.float64)
    return np.where(positives > 0, (len(labels) - positives) / np.maximum(positives, 1), 1.0)


def per_class_metrics(names: tuple[str, ...], labels: np.ndarray, scores: np.ndarray, criterion: str) -> dict:
    """Per class: threshold (chosen here), AUC, F1, precision, recall and counts; macro AUC and F1 over
    the classes with both outcomes in `labels` (the others have no AUC and are named)."""
    per_class, usable = {}, []
    for k, name in enumerate(names):
        truth, score = labels[:, k], scores[:, k]
        both = 0 < truth.sum() < len(truth)
        threshold = evaluation.choose_threshold(truth, score, criterion) if both else 0.5
        at = evaluation.binary_metrics(truth, score, threshold)
        per_class[name] = {"threshold": threshold, "auc": at["auc"] if both else None, "f1": at["f1"],
                           "precision": at["precision"], "recall": at["recall"], "positives": at["positives"],
                           "negatives": at["negatives"]}
        if both:
            usable.append(name)
    return {"per_class": per_class,
            "macro_auc": float(np.mean([per_class[n]["auc"] for n in usable])) if usable else None,
            "macro_f1": float(np.mean([per_class[n]["f1"] for n in usable])) if usable else None,
            "classes_without_both_outcomes": [n for n in names if n not in usable]}


def _to_keras(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda batch: (batch[ECG_KEY], tf.cast(batch[LABELS_KEY], tf.float32)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _predict(model: keras.Model, batches: tf.data.Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(record ids, labels [N, K], probabilities [N, K]) per example (window) over finite parsed batches."""
    ids, labels, scores = [], [], []
    for batch in batches:
        scores.append(model(batch[ECG_KEY], training=False).numpy())
        labels.append(batch[LABELS_KEY].numpy())
        ids += [rid.decode("utf-8") for rid in batch[RECORD_ID_KEY].numpy()]
    return ids, np.concatenate(labels).astype(np.int64), np.concatenate(scores)


def record_validation(names: tuple[str, ...], record_ids: list[str], labels: np.ndarray, scores: np.ndarray,
                      criterion: str) -> tuple[dict, evaluation.RecordScores]:
    """(metrics.json's `validation`, the per-record scores) from the validation windows: each class's
    threshold and every figure over records, a record's windows averaged as predict does
    (`evaluation.per_record`), with `unit`, `num_records` and `num_windows` saying so."""
    records = evaluation.per_record(record_ids, labels, scores)
    return {**per_class_metrics(names, records.labels, records.scores, criterion), **records.counts()}, records


def _copy_classes(names: tuple[str, ...], *folders: str) -> None:
    for folder in folders:
        with open(os.path.join(folder, CLASSES_FILE), "w", encoding="utf-8") as handle:
            handle.writelines(f"{name}\n" for name in names)


def run(data_dir: str, model_dir: str, config: TrainConfig = TrainConfig(), extra_data=()) -> dict:
    """Trains the K-output model on `data_dir/train`, picks a threshold per class on validation,
    exports a new serving version; returns what is written to metrics.json."""
    started = time.perf_counter()
    set_seed(config.seed, config.deterministic)
    tft_output = inputs.load_transform_output(data_dir)
    names = class_names(data_dir)
    spec = parsing_spec(tft_output, len(names))
    chosen = training_set(data_dir, list(extra_data), len(names), config.val_fraction)
    ids, labels, held_out = chosen.ids, chosen.labels, chosen.held_out
    is_val = np.array([rid in held_out for rid in ids])
    train_ids, val_ids = {r for r, v in zip(ids, is_val) if not v}, {r for r, v in zip(ids, is_val) if v}
    weights = positive_weights(labels[~is_val])
    _log.info("train %d, validation %d records; positives per class %s; positive weights %s", len(train_ids),
              len(val_ids), dict(zip(names, labels[~is_val].sum(axis=0).tolist())), np.round(weights, 2).tolist())
    cache = inputs.fits_in_memory(len(ids), spec)
    examples = inputs.read_examples(chosen.files, shuffle=True, seed=config.seed, cache=cache,
                                    file_sources=chosen.file_sources, exclude=chosen.exclude)
    if cache:
        inputs.fill_cache(examples)
    # `ids` has one entry per example (a record cut into windows has several): epochs are sized by examples.
    train_ds = _to_keras(inputs.input_fn(examples, spec, config.batch_size, record_ids=train_ids, shuffle=True,
                                         seed=config.seed, shuffle_buffer=min(len(train_ids), 1024),
                                         num_examples=int((~is_val).sum())))
    val_batches = inputs.input_fn(examples, spec, config.batch_size, record_ids=val_ids,
                                  num_examples=int(is_val.sum()))
    val_ds = _to_keras(val_batches)

    _clear_previous_run(model_dir)
    model = build_model(config.filters, config.kernel_size, config.dropout, config.learning_rate,
                        num_classes=len(names), positive_weights=weights.tolist(),
                        input_shape=tuple(spec[ECG_KEY].shape))  # the geometry the data was built with
    throughput = TrainingThroughput()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience,
                                                   restore_best_weights=True)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=2, shuffle=False,
                        callbacks=[early_stopping, throughput, ScalarSummaries(os.path.join(model_dir, LOGS_DIR))])
    # Per record, as predict decides: a record's windows are averaged before the thresholds are chosen.
    evaluated, per_record = record_validation(names, *_predict(model, val_batches), config.threshold_criterion)
    val_labels, val_scores = per_record.labels, per_record.scores
    thresholds = [evaluated["per_class"][n]["threshold"] for n in names]
    val_auc_history = history.history["val_auc"]
    metrics = {
        "multi_label": True,
        "classes": list(names),
        "thresholds": dict(zip(names, thresholds)),
        "threshold_criterion": config.threshold_criterion,
        "validation": evaluated,
        "class_counts": {"train": dict(zip(names, labels[~is_val].sum(axis=0).tolist())),
                         "validation": dict(zip(names, labels[is_val].sum(axis=0).tolist())),
                         "records": {"train": len(train_ids), "validation": len(val_ids)}},
        "positive_weights": dict(zip(names, weights.tolist())),
        "training_data": {"sources": chosen.per_source,
                          "refused": [{"path": r.path, "reason": r.reason} for r in chosen.refused]},
        "epochs_run": len(val_auc_history),
        "best_epoch": int(np.argmax(val_auc_history)) + 1,
        "training_seconds": round(time.perf_counter() - started, 1),
        "train_steps_per_second": round(throughput.steps_per_second(), 3),
        "cached_in_memory": cache,
        "config": dataclasses.asdict(config),
        "history": {name: [float(v) for v in values] for name, values in history.history.items()},
    }
    model.save(os.path.join(model_dir, MODEL_FILE))
    transform = {"data_dir": data_dir, sources.LEAD_STATISTICS_KEY: sources.lead_statistics(data_dir)}
    version, version_dir = export.export_serving_model(model, tft_output, 0.5, model_dir, transform,
                                                       thresholds=thresholds, class_names=names)
    metrics["serving_version"] = version
    _copy_classes(names, model_dir)
    write_multilabel_validation_predictions(os.path.join(model_dir, MULTILABEL_VALIDATION_PREDICTIONS_FILE), names,
                                            val_labels, val_scores)
    write_decoding_options(model_dir, inputs.decoding_options(data_dir))
    metrics["report"] = report.build_multilabel_safely(model_dir, metrics, val_labels, val_scores)
    with open(os.path.join(model_dir, METRICS_FILE), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    return metrics


def summary_line(metrics: dict) -> str:
    val = metrics["validation"]
    per_class = ", ".join(f"{n} {c['auc']:.3f}" if c["auc"] is not None else f"{n} -"
                          for n, c in val["per_class"].items())
    return (f"validation macro AUC {val['macro_auc']:.4f}, macro F1 {val['macro_f1']:.4f} over "
            f"{len(metrics['classes'])} classes (AUC {per_class}); {metrics['epochs_run']} epochs, "
            f"{metrics['training_seconds']} s; serving version {metrics['serving_version']}")


# --- predict ---------------------------------------------------------------------------------


def predict_rows(export_dir: str, data_dir: str, split: str, batch_size: int = 64) -> tuple[tuple[str, ...], list]:
    """(class names, rows of (record_id, [K probabilities], [K predicted 0/1])) for `data_dir/<split>`,
    through the export's `transformed` signature and its per-class thresholds, one row per record
    (`rows_per_record`: a record cut into windows gets their mean)."""
    names = class_names(os.path.join(export_dir, export.layout.EXTRA_ASSETS_DIR))
    spec = parsing_spec(export.transformed_feature_spec(export_dir), len(names))
    loaded = export.load_serving_model(export_dir)
    score = loaded.signatures[export.TRANSFORMED_SIGNATURE]
    ids, probabilities = [], []
    for batch in inputs.input_fn(inputs.read_examples(inputs.split_files(data_dir, split)), spec, batch_size):
        for rid, p, _ in scoring.score_parsed_multi_label(score, batch):  # fixed-size calls, as nightly's
            ids.append(rid)
            probabilities.append(p)
    return names, rows_per_record(ids, probabilities, scoring.model_thresholds(loaded))


def predict_records_rows(model_dir: str, export_dir: str, paths: list[str],
                         batch_size: int = 64) -> tuple[tuple[str, ...], list]:
    """`predict_rows` for raw recordings (`predict --records`): each decoded as the training data was,
    amplitude-checked and scored through `serving_default`; a file not scored has its reason code
    (rows of (record_id, probabilities or None, predicted or None, error))."""
    names = class_names(os.path.join(export_dir, export.layout.EXTRA_ASSETS_DIR))
    options = read_decoding_options(model_dir)
    loaded = export.load_serving_model(export_dir)
    score = loaded.signatures[export.SERVING_SIGNATURE]
    rows, pending = [], []

    def score_pending() -> None:
        if pending:
            outputs = score(**{ECG_KEY: np.stack([ecg for _, ecg in pending]).astype(np.float32)})
            rows.extend((rid, p.tolist(), lab.tolist(), "") for (rid, _), p, lab in zip(
                pending, outputs[export.PROBABILITIES_KEY].numpy(), outputs[export.LABELS_OUTPUT_KEY].numpy()))
            pending.clear()

    for record in raw_records.find_raw_records(paths):
        decoded = raw_records.decode_raw(record, options)
        if isinstance(decoded, Rejection):
            rows.append((record.record_id, None, None, decoded.reason))
        elif export.lead_amplitude_problem(decoded) is not None:
            rows.append((record.record_id, None, None, Reason.IMPLAUSIBLE_AMPLITUDE))
        else:
            pending.append((record.record_id, decoded))
            if len(pending) >= batch_size:
                score_pending()
    score_pending()
    return names, sorted(rows, key=lambda row: row[0])
