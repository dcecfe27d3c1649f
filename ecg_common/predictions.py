"""The predictions CSV, written by `python -m trainer.predict` and by nightly scoring
(`python -m beam_pipeline.reprocess --model_dir`, `ROOT/batch-*/predictions.csv`): one format, one writer.

    record_id,probability,predicted_label,true_label[,error]

or, for a multi-label model, `record_id,<one probability column per class>,labels[,error]`.

One row per record, sorted by record id; `probability` in full precision (repr) so `predicted_label`
can be re-derived from it exactly; `true_label` empty when the truth is unknown; the `error` column
only for raw-file scoring (`predict --records`), where a file not scored has its reason code and
empty `probability` and `predicted_label`. No TensorFlow here.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence

from ecg_common.schema import LABELS_KEY, UNKNOWN_LABEL

PREDICTIONS_FILE = "predictions.csv"
"""Nightly scoring's file in a batch folder."""
CSV_HEADER = ("record_id", "probability", "predicted_label", "true_label")
"""Always all four columns, so a reader need not guess; `true_label` is empty when the truth is unknown."""
ERROR_COLUMN = "error"
"""The fifth column of a `--records` CSV: a reason code (README's table) for a file not scored, else empty."""
WINDOW_COLUMN = "window_index"
"""The last column of a per-window CSV (`predict --per_window`): which window of its record a row scores."""
LABELS_SEPARATOR = "|"
"""A multi-label CSV's `labels` column: the predicted class names joined by this (class names never hold it)."""
MultiLabelRow = tuple
"""(record_id, [K probabilities] or None, [K predicted 0/1] or None[, error]): a multi-label model's row."""
LEGACY_PREDICTED_COLUMN = "label"
"""What `predicted_label` was called before: `read_csv` still reads such files."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    record_id: str
    probability: float
    predicted_label: int
    """1 (abnormal) when probability >= the threshold chosen on validation."""
    true_label: int = UNKNOWN_LABEL
    """The label the split's example carries, UNKNOWN_LABEL (-1) when it has none."""
    error: str = ""
    """A raw file not scored: its reason code (probability NaN, predicted_label UNKNOWN_LABEL)."""
    window_index: int | None = None
    """Which window of its record the row scores (`--window_stride_s` data); None for a row per record."""

    @property
    def label(self) -> int:
        """The predicted label under its former name, for callers of the Python API."""
        return self.predicted_label


def _label_cell(label: int) -> str:
    return "" if label == UNKNOWN_LABEL else str(label)


def csv_text(predictions: list[Prediction], error_column: bool = False) -> str:
    """The whole CSV (`CSV_HEADER`, and `ERROR_COLUMN` when asked), rows sorted by record id; rows per
    window (`window_index` set) get a last `WINDOW_COLUMN` and are sorted by record id and window."""
    per_window = any(p.window_index is not None for p in predictions)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER + ((ERROR_COLUMN,) if error_column else ()) + ((WINDOW_COLUMN,) if per_window else ()))
    for p in sorted(predictions, key=lambda p: (p.record_id, p.window_index or 0)):
        cells = ("", "") if p.error else (repr(p.probability), p.predicted_label)
        writer.writerow((p.record_id, *cells, _label_cell(p.true_label)) + ((p.error,) if error_column else ())
                        + ((p.window_index,) if per_window else ()))
    return buffer.getvalue()


def parse_csv(text: str) -> list[Prediction]:
    """`csv_text`'s rows back (a row not scored: probability NaN, its reason in `error`), also in the
    former layout `record_id,probability,label` (no truth)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    predicted = CSV_HEADER[2] if CSV_HEADER[2] in (reader.fieldnames or ()) else LEGACY_PREDICTED_COLUMN
    return [Prediction(row["record_id"], float(row["probability"] or math.nan),
                       int(row[predicted] or UNKNOWN_LABEL), int(row.get("true_label") or UNKNOWN_LABEL),
                       row.get(ERROR_COLUMN) or "") for row in reader]


def mean_over_windows(record_ids: Sequence[str], probabilities: Sequence[Sequence[float]]
                      ) -> tuple[list[str], list[list[float]], list[int]]:
    """(record ids, mean probabilities, window counts), one entry per record in order of first appearance.

    The one aggregation of a record's windows (`--window_stride_s` data): predict's row per record
    (`mean_per_record`) and the trainer's validation threshold and metrics (`trainer.evaluation.per_record`)
    both use it, so the threshold is chosen on the very figure it is applied to. `probabilities` has
    one row per window (one value for a binary model, K for a multi-label one); each column's mean is
    `math.fsum / count`, so a record of one window keeps its probability exactly."""
    rows_of: dict[str, list[Sequence[float]]] = {}
    for record_id, row in zip(record_ids, probabilities, strict=True):
        rows_of.setdefault(record_id, []).append(row)
    means = [[math.fsum(column) / len(rows) for column in zip(*rows)] for rows in rows_of.values()]
    return list(rows_of), means, [len(rows) for rows in rows_of.values()]


def mean_per_record(windows: list[Prediction], threshold: float) -> list[Prediction]:
    """One prediction per record: the mean probability of its windows (`mean_over_windows`), labelled
    abnormal (1) when it is >= `threshold` (the model's, chosen on validation), with the true label its
    windows carry."""
    true_label = {}
    for window in windows:
        true_label.setdefault(window.record_id, window.true_label)
    ids, means, _ = mean_over_windows([w.record_id for w in windows], [[w.probability] for w in windows])
    records = [Prediction(record_id, mean, int(mean >= threshold), true_label[record_id])
               for record_id, (mean,) in zip(ids, means)]
    return sorted(records, key=lambda p: p.record_id)


def multi_label_csv_rows(names: tuple[str, ...], rows: list[MultiLabelRow]) -> list[list[str]]:
    """The multi-label CSV's cells: `record_id`, one probability column per class (named as in
    classes.txt, repr), `labels` (the predicted classes joined by LABELS_SEPARATOR), and with `--records`
    an `error` column (a reason code for a file not scored, whose other cells are empty); rows sorted."""
    with_errors = any(len(row) > 3 for row in rows)
    out = [["record_id", *names, LABELS_KEY] + ([ERROR_COLUMN] if with_errors else [])]
    for rid, probabilities, predicted, *error in sorted(rows, key=lambda row: (row[0], row[1] or [])):
        cells = ([*map(repr, probabilities), LABELS_SEPARATOR.join(n for n, hit in zip(names, predicted) if hit)]
                 if probabilities is not None else [""] * (len(names) + 1))
        out.append([rid, *cells, *error])
    return out


def multi_label_csv_text(names: tuple[str, ...], rows: list[MultiLabelRow]) -> str:
    """The whole multi-label CSV (`multi_label_csv_rows`), written like `csv_text`: predict's file and
    nightly scoring's `predictions.csv` for a multi-label model."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(multi_label_csv_rows(names, rows))
    return buffer.getvalue()


def multi_label_rows_per_record(ids: list[str], probabilities: list[list[float]], thresholds: list[float]) -> list:
    """A multi-label model's rows (record_id, [K probabilities], [K predicted 0/1]) sorted by record id,
    one per record: each class's probability the mean over the record's windows (`mean_over_windows`,
    as the thresholds were chosen in training), predicted where it is >= that class's threshold (as the
    export's `labels` compares). Predict's and nightly scoring's (`trainer.multilabel.rows_per_record`)."""
    record_ids, means, _ = mean_over_windows(ids, probabilities)
    return sorted((rid, mean, [int(p >= t) for p, t in zip(mean, thresholds)]) for rid, mean in zip(record_ids, means))
