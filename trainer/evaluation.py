"""Validation metrics and the decision threshold, in plain numpy.

Exact, not Keras' streaming approximations: the AUC here is the Mann-Whitney statistic (ties count
one half), and the threshold is searched over the actual scores. Abnormal (1) is the positive class.
"""
from __future__ import annotations

import numpy as np

THRESHOLD_CRITERIA = ("youden", "f1")


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random abnormal > score of a random normal), ties counting 1/2; NaN if a class is absent."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average rank (1-based) within each group of tied scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and counts when predicting `score >= threshold`."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    tn = int(np.sum(~predicted & ~labels))
    fn = int(np.sum(~predicted & labels))

    def ratio(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else 0.0

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "accuracy": ratio(tp + tn, len(labels)),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0,
        "auc": roc_auc(labels, scores),
        "num_examples": int(len(labels)),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def _criterion_at(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, criterion: str) -> np.ndarray:
    """`criterion` at every threshold at once (counts from sorted scores: O(n log n), not O(n^2))."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positive, negative = np.sort(scores[labels]), np.sort(scores[~labels])
    tp = len(positive) - np.searchsorted(positive, thresholds, side="left")
    fp = len(negative) - np.searchsorted(negative, thresholds, side="left")
    fn = len(positive) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        if criterion == "youden":
            sensitivity = tp / max(len(positive), 1)
            specificity = (len(negative) - fp) / max(len(negative), 1)
            return sensitivity + specificity - 1.0
        return np.where(tp > 0, 2.0 * tp / (2.0 * tp + fp + fn), 0.0)


def choose_threshold(labels: np.ndarray, scores: np.ndarray, criterion: str = "youden") -> float:
    """The threshold that maximizes `criterion` on these (validation) scores.

    Candidates are the midpoints between consecutive distinct scores (plus 0 and 1), so the
    threshold sits in a gap rather than on a validation example's score. Youden's J (sensitivity +
    specificity - 1) does not depend on prevalence; F1 of the abnormal class favours recall when
    abnormal records are the majority. Ties go to the candidate closest to 0.5, the natural cut of
    a model trained with balanced class weights.
    """
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"unknown threshold criterion {criterion!r}; expected one of {THRESHOLD_CRITERIA}")
    distinct = np.unique(np.asarray(scores, dtype=np.float64))
    candidates = np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2.0, [1.0]])
    values = _criterion_at(labels, scores, candidates, criterion)
    best = np.flatnonzero(np.isclose(values, values.max(), rtol=0.0, atol=1e-12))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates, thresholds) predicting `score >= threshold` at every
    distinct score, from (0, 0) (threshold +inf) to (1, 1). Tied scores move both rates at once, so the
    trapezoidal area under these points is exactly `roc_auc`."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.unique(scores)[::-1]
    positive, negative = np.sort(scores[labels]), np.sort(scores[~labels])
    tp = len(positive) - np.searchsorted(positive, thresholds, side="left")
    fp = len(negative) - np.searchsorted(negative, thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / max(len(negative), 1)])
    tpr = np.concatenate([[0.0], tp / max(len(positive), 1)])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])
