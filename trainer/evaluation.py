"""Validation metrics, their uncertainty and the decision threshold, in plain numpy.

Exact, not Keras' streaming approximations: the AUC here is the Mann-Whitney statistic (ties count
one half), and the threshold is searched over the actual scores. Abnormal (1) is the positive class.

A figure from a few records says little: specificity 1.0 from one normal record is one correct
guess. `validation_metrics` therefore reports every metric with its class counts, a bootstrap 95%
interval, and `reliable: false` plus a `caveat` when a class has fewer than
`MIN_RELIABLE_CLASS_COUNT` records.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ecg_common.predictions import mean_over_windows
from ecg_common.schema import ABNORMAL, CLASS_NAMES, NORMAL

THRESHOLD_CRITERIA = ("youden", "f1")

MIN_RELIABLE_CLASS_COUNT = 10
"""Below this many records of a class, the metrics are flagged unreliable: one record then moves
sensitivity or specificity by more than 10 percentage points."""

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
"""Fixed, independent of the training seed: the same validation scores always get the same interval."""
INTERVAL_LEVEL = 0.95
BOOTSTRAP_METHOD = "stratified percentile"
INTERVAL_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
"""Every ratio `binary_metrics` reports gets an interval."""
_RESAMPLES_PER_CHUNK = 100
"""Resamples drawn at once: bounds memory at about 100 x 3 arrays of the validation size."""


UNIT = "record"
"""What the validation figures count: a record, whose probability is the mean over its windows, as
predict scores it (`--window_stride_s` data has several windows per record; other data one)."""


@dataclasses.dataclass(frozen=True)
class RecordScores:
    """Validation scores per record (`per_record`), with how many windows they came from."""

    record_ids: list[str]
    labels: np.ndarray
    """[R] (binary) or [R, K] (multi-label): the labels of each record's first window (all its windows share them)."""
    scores: np.ndarray
    """Like `labels`: the mean probability over the record's windows."""
    num_windows: int

    def counts(self) -> dict:
        """metrics.json's statement of what its validation figures counted."""
        return {"unit": UNIT, "num_records": len(self.record_ids), "num_windows": self.num_windows}


def per_record(record_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray) -> RecordScores:
    """Window scores (one row per example, in any order) grouped by record and averaged exactly as
    predict does (`ecg_common.predictions.mean_over_windows`), records in order of first appearance:
    data of one window per record comes back unchanged, in its order (identical metrics and intervals)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    columns = scores.reshape(len(scores), -1)
    ids, means, _ = mean_over_windows(list(record_ids), columns.tolist())
    first = {}
    for index, record_id in enumerate(record_ids):
        first.setdefault(record_id, index)
    record_scores = np.array(means, dtype=np.float64).reshape((len(ids),) + scores.shape[1:])
    return RecordScores(ids, labels[[first[rid] for rid in ids]], record_scores, int(len(scores)))


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
        "positives": int(labels.sum()),
        "negatives": int((~labels).sum()),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def _resample_counts(rng: np.random.Generator, size: int, resamples: int) -> np.ndarray:
    """(resamples, size) int64: how often each of `size` records is drawn in each resample of `size` draws."""
    draws = rng.integers(0, size, size=(resamples, size)) + (np.arange(resamples) * size)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * size).reshape(resamples, size)


def _resampled_metrics(positive: np.ndarray, negative: np.ndarray, threshold: float,
                       rng: np.random.Generator, resamples: int) -> dict[str, np.ndarray]:
    """Every `INTERVAL_METRICS` value for `resamples` stratified resamples, as arrays of that length.

    Each resample draws the positives' and the negatives' scores with replacement within their class,
    expressed as draw counts w, so a resample costs a few row sums. The AUC of a resample is
    sum_i w_i * (drawn negatives below positive i + half the tied ones) / (n+ n-): with the negatives
    sorted, "drawn negatives below" is a cumulative count read at `searchsorted` indices. Integer
    arithmetic throughout (exact), and no BLAS call: OpenBLAS threads slow down, not speed up, a
    matrix-vector product of this size on a busy machine.
    """
    n_pos, n_neg = len(positive), len(negative)
    negative = np.sort(negative)
    below = np.searchsorted(negative, positive, side="left")
    up_to = np.searchsorted(negative, positive, side="right")
    w_pos, w_neg = _resample_counts(rng, n_pos, resamples), _resample_counts(rng, n_neg, resamples)
    tp = np.compress(positive >= threshold, w_pos, axis=1).sum(axis=1)
    fp = np.compress(negative >= threshold, w_neg, axis=1).sum(axis=1)
    fn, tn = n_pos - tp, n_neg - fp
    cumulative = np.zeros((resamples, n_neg + 1), dtype=np.int64)
    np.cumsum(w_neg, axis=1, out=cumulative[:, 1:])
    # Twice the wins: below + up_to counts a tie once and a clear win twice.
    twice_wins = np.einsum("ij,ij->i", w_pos, cumulative[:, below] + cumulative[:, up_to])
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "accuracy": (tp + tn) / (n_pos + n_neg),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
            "recall": tp / n_pos,
            "specificity": tn / n_neg,
            "f1": np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0),  # = 2PR / (P + R), 0 when TP = 0
            "auc": twice_wins / (2.0 * n_pos * n_neg),
        }


def bootstrap_intervals(labels: np.ndarray, scores: np.ndarray, threshold: float,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = INTERVAL_LEVEL) -> dict[str, list[float] | None]:
    """A percentile bootstrap interval per metric of `binary_metrics` ({name: [low, high]}).

    Stratified: each resample keeps the class counts of the validation split (which is drawn per
    class, see `inputs.validation_ids`), so the AUC is defined in every resample. The threshold is
    held fixed; it was chosen on these same records, so the figures at it are, if anything,
    optimistic. Vectorized over resamples: about 0.2 s for 10^4 records and 1000 resamples. Every
    interval is None when a class is absent.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        return {name: None for name in INTERVAL_METRICS}
    rng = np.random.default_rng(seed)
    chunks = [_resampled_metrics(scores[labels], scores[~labels], threshold, rng, min(_RESAMPLES_PER_CHUNK, left))
              for left in range(resamples, 0, -_RESAMPLES_PER_CHUNK)]
    tail = (1.0 - level) / 2.0
    intervals = {}
    for name in INTERVAL_METRICS:
        values = np.concatenate([chunk[name] for chunk in chunks])
        low, high = np.quantile(values, [tail, 1.0 - tail])
        intervals[name] = [float(low), float(high)]
    return intervals


def reliability(positives: int, negatives: int, what: str = "validation") -> dict:
    """{"reliable": bool, "caveat": str | None}: unreliable when a class has fewer than
    `MIN_RELIABLE_CLASS_COUNT` records among `what`."""
    if min(positives, negatives) >= MIN_RELIABLE_CLASS_COUNT:
        return {"reliable": True, "caveat": None}
    steps = "; ".join(f"{metric} cannot be measured" if count == 0 else f"one record moves {metric} by {1 / count:.0%}"
                      for metric, count in (("sensitivity", positives), ("specificity", negatives))
                      if count < MIN_RELIABLE_CLASS_COUNT)
    return {"reliable": False,
            "caveat": f"unreliable: {what} holds only {negatives} {CLASS_NAMES[NORMAL]} and {positives} "
                      f"{CLASS_NAMES[ABNORMAL]} records (fewer than {MIN_RELIABLE_CLASS_COUNT} of a class): {steps}"}


def validation_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """`binary_metrics` plus what it takes to judge them: `interval_95` per metric, how it was drawn
    (`bootstrap`), and `reliable` / `caveat` from the class counts (metrics.json's `validation`)."""
    metrics = binary_metrics(labels, scores, threshold)
    metrics["interval_95"] = bootstrap_intervals(labels, scores, threshold, resamples, seed)
    metrics["bootstrap"] = {"method": BOOTSTRAP_METHOD, "resamples": resamples, "seed": seed, "level": INTERVAL_LEVEL}
    metrics.update(reliability(metrics["positives"], metrics["negatives"]))
    metrics["min_reliable_class_count"] = MIN_RELIABLE_CLASS_COUNT
    return metrics


def record_validation(record_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray, criterion: str,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, dict, RecordScores]:
    """(threshold, metrics.json's `validation`, the per-record scores) of a binary model from its
    validation windows: the threshold is chosen and every figure computed over records (`per_record`),
    the unit predict decides on, with `unit`, `num_records` and `num_windows` saying so."""
    records = per_record(record_ids, labels, scores)
    threshold = choose_threshold(records.labels, records.scores, criterion)
    metrics = validation_metrics(records.labels, records.scores, threshold, resamples)
    metrics.update(records.counts())
    return threshold, metrics, records


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
