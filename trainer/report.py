"""The training report: `MODEL/report/index.html` and its PNGs, drawn from metrics.json and the validation scores.

Before trusting a model people want to see how training went and how the scores separate the
classes, not only the numbers at one threshold:

    learning_curves.png         loss, AUC and accuracy per epoch, train vs validation, best epoch marked
    roc.png                     the validation ROC curve, its AUC, and the operating point at the threshold
    confusion.png               the validation confusion matrix at the chosen threshold
    probability_histogram.png   validation P(abnormal), one panel per true class, with the threshold

The metrics table gives each figure's bootstrap 95% interval and the class and confusion counts it
comes from; when a class has fewer than `evaluation.MIN_RELIABLE_CLASS_COUNT` validation records the
page opens with a warning (metrics.json's `validation.caveat`). Each class gets its own histogram
panel, scaled to its own count, so a class of one record is as visible as a class of hundreds.

`metrics.json` (history, threshold, confusion counts, intervals) stays the machine-readable source;
the ROC and the histogram need every validation score, which training saves beside it as
`validation_predictions.csv` (`true_label,probability`, one row per validation record, in the order
scored). `python -m trainer.report MODEL` redraws the report from those two files; for a metrics.json
written before the intervals existed, they are computed from the validation scores.
"""
from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np

from ecg_common import report_page
from ecg_common.cli import EXIT_OK, CommandLineParser, add_verbose_flag, run_command
from ecg_common.report_page import Section, Table, text
from ecg_common.schema import ABNORMAL, CLASS_NAMES, NORMAL
from trainer import evaluation
from trainer.evaluation import roc_auc, roc_curve
from trainer.layout import (METRICS_FILE, MULTILABEL_VALIDATION_PREDICTIONS_FILE, REPORT_DIR, VALIDATION_PREDICTIONS_FILE,
                            read_multilabel_validation_predictions, read_validation_predictions)

STATUS_WRITTEN, STATUS_FAILED = "written", "failed"

LEARNING_CURVES_PNG = "learning_curves.png"
ROC_PNG = "roc.png"
CONFUSION_PNG = "confusion.png"
HISTOGRAM_PNG = "probability_histogram.png"

HISTOGRAM_BINS = 50
CURVE_ORDER = ("loss", "auc")
"""Learning-curve panels shown first; any other metric Keras logged follows by name."""
CLASS_COLORS = {NORMAL: "#27ae60", ABNORMAL: "#d35400"}
TRAIN_COLOR, VALIDATION_COLOR = "#2e86c1", "#c0392b"
VALIDATION_PREFIX = "val_"
WARNING_CLASS = "warning"
"""The page style's class for text that must not be missed (`ecg_common.report_page.PAGE_STYLE`)."""
_log = logging.getLogger(__name__)


# --- figures ------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), facecolor="white", layout="constrained")


def learning_curves_figure(history: dict[str, list[float]], best_epoch: int | None):
    """One panel per metric Keras logged (loss, auc, accuracy...), train and validation per epoch."""
    names = sorted((name for name in history if not name.startswith(VALIDATION_PREFIX)),
                   key=lambda name: (CURVE_ORDER.index(name) if name in CURVE_ORDER else len(CURVE_ORDER), name))
    figure = _new_figure(5.0 * max(len(names), 1), 3.8)
    for k, name in enumerate(names):
        ax = figure.add_subplot(1, len(names), k + 1)
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", markersize=3, color=TRAIN_COLOR, label="train")
        validation = history.get(VALIDATION_PREFIX + name)
        if validation is not None:
            ax.plot(epochs, validation, marker="o", markersize=3, color=VALIDATION_COLOR, label="validation")
        if best_epoch:
            ax.axvline(best_epoch, color="#555", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        ax.grid(color="#e5e5e5")
        ax.legend(fontsize=8)
    return figure


def roc_figure(labels: np.ndarray, scores: np.ndarray, threshold: float):
    """The ROC curve of the validation scores, with the chance diagonal and the point at the threshold."""
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc(labels, scores)
    figure = _new_figure(5.2, 5.0)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color=VALIDATION_COLOR, linewidth=2, drawstyle="default", label=f"validation, AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", label="chance")
    positive, predicted = labels.astype(bool), scores >= threshold
    point_fpr = np.sum(predicted & ~positive) / max(np.sum(~positive), 1)
    point_tpr = np.sum(predicted & positive) / max(np.sum(positive), 1)
    ax.plot([point_fpr], [point_tpr], "o", color="black", markersize=7,
            label=f"threshold {threshold:.3g}: TPR {point_tpr:.2f}, FPR {point_fpr:.2f}")
    _finish_roc_axes(ax, f"ROC, {_class_counts_text(labels)} validation records", legend_size=8)
    return figure


def confusion_figure(confusion: dict[str, int], threshold: float):
    """The 2 x 2 matrix (rows true, columns predicted) with counts and the share of each true class."""
    matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = _new_figure(4.8, 4.2)
    ax = figure.add_subplot()
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(2):
        for col in range(2):
            ax.text(col, row, f"{matrix[row, col]}\n({shares[row, col]:.0%})", ha="center", va="center",
                    fontsize=12, color="white" if shares[row, col] > 0.6 else "black")
    names = [CLASS_NAMES[NORMAL], CLASS_NAMES[ABNORMAL]]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"validation, threshold {threshold:.3g}", fontsize=10)
    return figure


def _class_counts_text(labels: np.ndarray) -> str:
    return " / ".join(f"{np.sum(labels == label)} {CLASS_NAMES[label]}" for label in (NORMAL, ABNORMAL))


def probability_histogram_figure(labels: np.ndarray, scores: np.ndarray, threshold: float):
    """Validation P(abnormal), one panel per true class (shared x, own y scale), with the threshold.

    Side by side, not overlaid: on one axis a class of one record is a bar of height 1 under a class
    of hundreds, hidden behind its bars. Each panel's y axis fits its own class, so every class shows.
    """
    from matplotlib.ticker import MaxNLocator

    classes = (NORMAL, ABNORMAL)
    figure = _new_figure(9.0, 3.8)
    axes = figure.subplots(1, len(classes), sharex=True, squeeze=False)[0]
    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for ax, label in zip(axes, classes):
        chosen = scores[labels == label]
        name = f"true {CLASS_NAMES[label]} ({len(chosen)})"
        ax.hist(chosen, bins=bins, color=CLASS_COLORS[label], edgecolor="white", label=name)
        if not len(chosen):
            ax.text(0.5, 0.5, "no validation records", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3g}")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("predicted P(abnormal)")
        ax.set_ylabel("validation records")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=10, color=CLASS_COLORS[label])
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
        ax.legend(fontsize=8)
    return figure


# --- the page ------------------------------------------------------------------------------------------


METRIC_NAMES = {"accuracy": "accuracy", "auc": "AUC", "precision": "precision", "recall": "recall (sensitivity)",
                "specificity": "specificity", "f1": "F1"}


def _interval_cell(validation: dict, name: str) -> str:
    interval = (validation.get("interval_95") or {}).get(name)
    return f"{interval[0]:.3f} to {interval[1]:.3f}" if interval else "n/a"


def _metrics_table(validation: dict) -> Table:
    return Table(["metric", "validation", f"{evaluation.INTERVAL_LEVEL:.0%} interval"],
                 [[METRIC_NAMES[name], float(validation[name]), _interval_cell(validation, name)]
                  for name in METRIC_NAMES if name in validation])


def _counts_table(validation: dict) -> Table:
    """What the ratios are computed from: class counts and the confusion counts at the threshold."""
    confusion = validation["confusion"]
    return Table([f"{CLASS_NAMES[NORMAL]} (negatives)", f"{CLASS_NAMES[ABNORMAL]} (positives)", "TP", "FP", "TN", "FN"],
                 [[validation["negatives"], validation["positives"], confusion["tp"], confusion["fp"],
                   confusion["tn"], confusion["fn"]]])


def _with_uncertainty(metrics: dict, labels: np.ndarray, scores: np.ndarray) -> dict:
    """metrics.json's `validation`; for one written before intervals and counts existed, recomputed
    from the validation scores (the same function and seed training uses)."""
    validation = metrics["validation"]
    if "interval_95" in validation and "reliable" in validation:
        return validation
    return evaluation.validation_metrics(labels, scores, float(metrics["threshold"]))


def _sections(metrics: dict, validation: dict, labels: np.ndarray, figures: dict[str, str]) -> list[Section]:
    counts = metrics.get("class_counts", {})
    balance = Table(["split"] + list(CLASS_NAMES.values()),
                    [[split] + [by_class.get(name, 0) for name in CLASS_NAMES.values()]
                     for split, by_class in counts.items()])
    threshold = metrics["threshold"]
    bootstrap = validation.get("bootstrap", {})
    return [
        Section("Learning curves",
                [f"{metrics.get('epochs_run', '?')} epochs run; early stopping on validation AUC restored the "
                 f"weights of epoch {metrics.get('best_epoch', '?')}. The per-epoch AUC is Keras' running "
                 "estimate (200 thresholds); the ROC below is exact."],
                [balance] if counts else [], [figures[LEARNING_CURVES_PNG]]),
        Section("ROC curve", [f"Exact ROC of the {len(labels)} validation scores "
                              f"(<code>{VALIDATION_PREDICTIONS_FILE}</code>)."], figures=[figures[ROC_PNG]]),
        Section("At the chosen threshold",
                [f"Threshold {text(f'{threshold:.4g}')}, chosen on validation by "
                 f"{text(metrics.get('threshold_criterion', '?'))}; a record is predicted abnormal when "
                 "P(abnormal) &ge; threshold. The threshold was chosen on these same records, so the figures "
                 "at it are optimistic.",
                 f"Intervals: {text(bootstrap.get('method', evaluation.BOOTSTRAP_METHOD))} bootstrap, "
                 f"{text(bootstrap.get('resamples', evaluation.BOOTSTRAP_RESAMPLES))} resamples drawn within "
                 f"each class (seed {text(bootstrap.get('seed', evaluation.BOOTSTRAP_SEED))}), threshold held "
                 f"fixed. With fewer than {evaluation.MIN_RELIABLE_CLASS_COUNT} records of a class the figures "
                 "are flagged unreliable. An interval of zero width means every resample gave the same value "
                 "(e.g. every record of a class right), not certainty: with n records all right, the true "
                 "rate may still be as low as about 1 - 3/n."],
                [_metrics_table(validation), _counts_table(validation)],
                [figures[CONFUSION_PNG], figures[HISTOGRAM_PNG]]),
    ]


def build(model_dir: str, metrics: dict | None = None) -> str:
    """Draws `model_dir/report/` from `metrics` (default: `model_dir/metrics.json`) and the validation
    predictions; returns the index's path."""
    if metrics is None:
        with open(os.path.join(model_dir, METRICS_FILE), encoding="utf-8") as handle:
            metrics = json.load(handle)
    if metrics.get("multi_label"):
        names, labels, scores = read_multilabel_validation_predictions(
            os.path.join(model_dir, MULTILABEL_VALIDATION_PREDICTIONS_FILE))
        return build_multilabel(model_dir, metrics, labels, scores)
    labels, scores = read_validation_predictions(os.path.join(model_dir, VALIDATION_PREDICTIONS_FILE))
    report_page.use_agg()
    folder = report_page.fresh_folder(os.path.join(model_dir, REPORT_DIR))
    threshold = float(metrics["threshold"])
    drawn = {
        LEARNING_CURVES_PNG: learning_curves_figure(metrics["history"], metrics.get("best_epoch")),
        ROC_PNG: roc_figure(labels, scores, threshold),
        CONFUSION_PNG: confusion_figure(metrics["validation"]["confusion"], threshold),
        HISTOGRAM_PNG: probability_histogram_figure(labels, scores, threshold),
    }
    figures = {name: report_page.save_figure(figure, folder, name) for name, figure in drawn.items()}
    validation = _with_uncertainty(metrics, labels, scores)
    seconds = metrics.get("training_seconds", "?")
    intro = [f"Every number here comes from <a href=\"../{METRICS_FILE}\">{METRICS_FILE}</a> and "
             f"<a href=\"../{VALIDATION_PREDICTIONS_FILE}\">{VALIDATION_PREDICTIONS_FILE}</a>. Validation AUC "
             f"{float(validation['auc']):.4f} ({evaluation.INTERVAL_LEVEL:.0%} interval "
             f"{_interval_cell(validation, 'auc')}) from {validation['negatives']} {CLASS_NAMES[NORMAL]} and "
             f"{validation['positives']} {CLASS_NAMES[ABNORMAL]} records, training {text(seconds)} s."]
    if not validation["reliable"]:
        intro.insert(0, f'<span class="{WARNING_CLASS}">Warning: these validation figures are '
                        f"{text(validation['caveat'])}.</span>")
    return report_page.write_page(folder, "ECG classifier training report", intro,
                                  _sections(metrics, validation, labels, figures))


def build_safely(model_dir: str, metrics: dict) -> dict:
    """`build` for training: never raises; returns metrics.json's `report` entry
    ({"status": "written", "index": "report/index.html"} or {"status": "failed", "error": ...})."""
    try:
        build(model_dir, metrics)
    except Exception as error:  # noqa: BLE001 - a report must never cost a trained model
        _log.warning("the training report could not be drawn; the model is saved", exc_info=True)
        return {"status": STATUS_FAILED, "error": f"{type(error).__name__}: {error}"}
    return {"status": STATUS_WRITTEN, "index": f"{REPORT_DIR}/{report_page.INDEX_FILE}"}


# --- multi-label models (trainer/multilabel.py) -----------------------------------------------------

PER_CLASS_ROC_PNG = "roc_per_class.png"


def per_class_roc_figure(names, labels: np.ndarray, scores: np.ndarray):
    """One validation ROC curve per class (those with both outcomes), its AUC in the legend."""
    figure = _new_figure(6.2, 5.6)
    ax = figure.add_subplot()
    for k, name in enumerate(names):
        if 0 < labels[:, k].sum() < len(labels):
            fpr, tpr, _ = roc_curve(labels[:, k], scores[:, k])
            ax.plot(fpr, tpr, linewidth=1.6, label=f"{name}: AUC {roc_auc(labels[:, k], scores[:, k]):.3f} "
                                                   f"({int(labels[:, k].sum())} positive)")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", label="chance")
    _finish_roc_axes(ax, f"ROC per class, {len(labels)} validation records", legend_size=7)
    return figure


def _finish_roc_axes(ax, title: str, legend_size: int) -> None:
    """The unit square, axis names, grid and legend every ROC figure of the report shares."""
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=10)
    ax.grid(color="#e5e5e5")
    ax.legend(fontsize=legend_size, loc="lower right")


def build_multilabel(model_dir: str, metrics: dict, labels: np.ndarray, scores: np.ndarray) -> str:
    """`MODEL/report/index.html` of a multi-label model: learning curves, the ROC of every class and a
    table of each class's AUC, F1, precision, recall and threshold (from `metrics`, as in metrics.json)."""
    names, validation = metrics["classes"], metrics["validation"]
    report_page.use_agg()
    folder = report_page.fresh_folder(os.path.join(model_dir, REPORT_DIR))
    drawn = {LEARNING_CURVES_PNG: learning_curves_figure(metrics["history"], metrics.get("best_epoch")),
             PER_CLASS_ROC_PNG: per_class_roc_figure(names, labels, scores)}
    figures = {name: report_page.save_figure(figure, folder, name) for name, figure in drawn.items()}

    def cell(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    per_class = validation["per_class"]
    table = Table(["class", "positives", "negatives", "AUC", "F1", "precision", "recall", "threshold"],
                  [[n, per_class[n]["positives"], per_class[n]["negatives"], cell(per_class[n]["auc"]),
                    cell(per_class[n]["f1"]), cell(per_class[n]["precision"]), cell(per_class[n]["recall"]),
                    cell(per_class[n]["threshold"])] for n in names])
    intro = [f"Multi-label model over {len(names)} classes. Validation macro AUC {cell(validation['macro_auc'])}, "
             f"macro F1 {cell(validation['macro_f1'])} (over the classes with both outcomes in validation), "
             f"training {text(metrics.get('training_seconds', '?'))} s. Every number comes from "
             f"<a href=\"../{METRICS_FILE}\">{METRICS_FILE}</a>."]
    sections = [
        Section("Learning curves", [f"{metrics.get('epochs_run', '?')} epochs run; early stopping on the "
                                    f"validation macro AUC restored epoch {metrics.get('best_epoch', '?')}."],
                figures=[figures[LEARNING_CURVES_PNG]]),
        Section("Per class", ["Each class has its own threshold, chosen on these validation records by "
                              f"{text(metrics.get('threshold_criterion', '?'))}, so the figures at it are "
                              "optimistic."], [table], [figures[PER_CLASS_ROC_PNG]]),
    ]
    return report_page.write_page(folder, "ECG multi-label classifier training report", intro, sections)


def build_multilabel_safely(model_dir: str, metrics: dict, labels: np.ndarray, scores: np.ndarray) -> dict:
    """`build_multilabel` for training: never raises (see `build_safely`)."""
    try:
        build_multilabel(model_dir, metrics, labels, scores)
    except Exception as error:  # noqa: BLE001 - a report must never cost a trained model
        _log.warning("the training report could not be drawn; the model is saved", exc_info=True)
        return {"status": STATUS_FAILED, "error": f"{type(error).__name__}: {error}"}
    return {"status": STATUS_WRITTEN, "index": f"{REPORT_DIR}/{report_page.INDEX_FILE}"}


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="python -m trainer.report",
                               description="Redraw MODEL/report/ from MODEL/metrics.json and "
                                           f"MODEL/{VALIDATION_PREDICTIONS_FILE}.",
                               epilog="Exit codes: 0 success, 1 the report could not be drawn, 2 usage error.")
    parser.add_argument("model_dir", help="a trainer --model_dir")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)

    def work() -> int:
        print(f"wrote {build(args.model_dir)}")
        return EXIT_OK

    return run_command(work, "trainer", args.verbose)


if __name__ == "__main__":
    sys.exit(main())

