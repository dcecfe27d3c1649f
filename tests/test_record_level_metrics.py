"""The trainer's threshold(s) and validation figures are per record, as predict decides: a record's
windows are averaged (the one aggregation, `ecg_common.predictions.mean_over_windows`) before the
threshold is chosen and the metrics are computed; data of one window per record gives exactly the
figures it gave before."""
from __future__ import annotations

import numpy as np
import pytest

from ecg_common.predictions import Prediction, mean_per_record
from trainer import evaluation, multilabel

# Four records of two windows each. Per record (the means): 0.2 and 0.45 normal, 0.5 and 0.8 abnormal,
# separated at 0.475. Per window, A's low window (0.1) is the lowest score, and the best cut is 0.625.
WINDOWS = [("A", 1, 0.9), ("B", 0, 0.45), ("C", 1, 0.8), ("D", 0, 0.2),
           ("A", 1, 0.1), ("B", 0, 0.45), ("C", 1, 0.8), ("D", 0, 0.2)]


def _columns(windows):
    return [w[0] for w in windows], np.array([w[1] for w in windows]), np.array([w[2] for w in windows])


def test_the_threshold_is_chosen_on_the_records_means_not_on_windows():
    ids, labels, scores = _columns(WINDOWS)
    per_window = evaluation.choose_threshold(labels, scores, "youden")
    threshold, metrics, records = evaluation.record_validation(ids, labels, scores, "youden", resamples=50)
    assert per_window == pytest.approx(0.625)
    assert threshold == pytest.approx(0.475) and threshold != pytest.approx(per_window)
    assert records.record_ids == ["A", "B", "C", "D"] and records.scores.tolist() == pytest.approx([0.5, 0.45, 0.8, 0.2])
    assert (metrics["unit"], metrics["num_records"], metrics["num_windows"]) == ("record", 4, 8)
    assert (metrics["num_examples"], metrics["positives"], metrics["negatives"]) == (4, 2, 2)
    assert metrics["accuracy"] == 1.0 and metrics["auc"] == 1.0
    # predict, at that threshold, labels every record as the metrics counted it.
    rows = mean_per_record([Prediction(rid, p, 0, t, window_index=0) for rid, t, p in WINDOWS], threshold)
    confusion = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for row in rows:
        confusion[("t" if row.predicted_label == row.true_label else "f")
                  + ("p" if row.predicted_label else "n")] += 1
    assert confusion == metrics["confusion"]


def test_windows_are_grouped_by_record_in_any_order():
    ids, labels, scores = _columns(WINDOWS)
    order = np.random.default_rng(0).permutation(len(ids))
    records = evaluation.per_record([ids[i] for i in order], labels[order], scores[order])
    means = dict(zip(records.record_ids, records.scores.tolist()))
    assert means == pytest.approx({"A": 0.5, "B": 0.45, "C": 0.8, "D": 0.2})
    assert dict(zip(records.record_ids, records.labels.tolist())) == {"A": 1, "B": 0, "C": 1, "D": 0}


def test_one_window_per_record_gives_exactly_the_former_figures():
    rng = np.random.default_rng(7)
    labels = (rng.random(300) < 0.3).astype(np.int64)
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1).astype(np.float32).astype(np.float64)
    ids = [f"R{i:03d}" for i in rng.permutation(300)]
    threshold, metrics, records = evaluation.record_validation(ids, labels, scores, "f1")
    former_threshold = evaluation.choose_threshold(labels, scores, "f1")
    former = evaluation.validation_metrics(labels, scores, former_threshold)
    assert threshold == former_threshold
    assert {k: v for k, v in metrics.items() if k not in ("unit", "num_records", "num_windows")} == former
    assert (metrics["num_records"], metrics["num_windows"]) == (300, 300)
    assert records.record_ids == ids and np.array_equal(records.scores, scores)  # order and values kept


def test_multi_label_thresholds_are_per_record_per_class():
    ids, labels, scores = _columns(WINDOWS)
    # Class 0 as above; class 1 the mirror image (its scores and labels flipped).
    k_labels, k_scores = np.stack([labels, 1 - labels], axis=1), np.stack([scores, 1 - scores], axis=1)
    validation, records = multilabel.record_validation(("X", "Y"), ids, k_labels, k_scores, "youden")
    assert validation["per_class"]["X"]["threshold"] == pytest.approx(0.475)
    assert validation["per_class"]["Y"]["threshold"] == pytest.approx(0.525)
    assert validation["per_class"]["X"]["threshold"] != pytest.approx(
        evaluation.choose_threshold(labels, scores, "youden"))
    assert validation["per_class"]["X"]["positives"] + validation["per_class"]["X"]["negatives"] == 4
    assert (validation["unit"], validation["num_records"], validation["num_windows"]) == ("record", 4, 8)
    assert records.labels.shape == (4, 2) and records.scores.shape == (4, 2)
    same, _ = multilabel.record_validation(("X", "Y"), [f"{i}" for i in range(8)], k_labels, k_scores, "youden")
    assert same["per_class"] == multilabel.per_class_metrics(("X", "Y"), k_labels, k_scores, "youden")["per_class"]


def test_multi_label_predict_writes_a_row_per_record_thresholded_as_training_chose():
    ids, labels, scores = _columns(WINDOWS)
    k_labels, k_scores = np.stack([labels, 1 - labels], axis=1), np.stack([scores, 1 - scores], axis=1)
    validation, _ = multilabel.record_validation(("X", "Y"), ids, k_labels, k_scores, "youden")
    thresholds = [validation["per_class"][name]["threshold"] for name in ("X", "Y")]
    rows = multilabel.rows_per_record(ids, k_scores.tolist(), thresholds)
    assert [row[0] for row in rows] == ["A", "B", "C", "D"]
    assert [row[1] for row in rows] == [pytest.approx([0.5, 0.5]), pytest.approx([0.45, 0.55]),
                                        pytest.approx([0.8, 0.2]), pytest.approx([0.2, 0.8])]
    assert [row[2] for row in rows] == [[1, 0], [0, 1], [1, 0], [0, 1]]  # every record right, as validation counted
    single = multilabel.rows_per_record(["B", "A"], [[0.3, 0.7], [0.9, 0.1]], [0.5, 0.5])
    assert single == [("A", [0.9, 0.1], [1, 0]), ("B", [0.3, 0.7], [0, 1])]  # one window: its probabilities
