"""The run report (`beam_pipeline.report`, `ecg_plot`) and the training report (`trainer.report`).

Each figure is rendered from small inputs and checked to be a real PNG of a sensible size; each page
must reference every PNG by a relative path that exists. One pipeline run end to end proves the job
publishes `OUT/report/` and records it in `run_summary.json`.
"""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest

import trainer  # noqa: F401 - sets TF_USE_LEGACY_KERAS / KERAS_BACKEND before TensorFlow is imported
from beam_pipeline.cli.main_command import main as pipeline_main
from beam_pipeline.report import build as report
from beam_pipeline.report import ecg_plot, figures
from beam_pipeline.report.example import run_geometry
from beam_pipeline.synthetic.generator import generate_dataset
from ecg_common import report_page
from ecg_common.cli import EXIT_OK
from ecg_common.layout import REPORT_DIR
from ecg_common.schema import DEFAULT_GEOMETRY, ECG_SHAPE, LEAD_NAMES, NUM_LEADS, SAMPLING_RATE_HZ, Geometry
from trainer import evaluation, layout
from trainer import report as training_report
from trainer.layout import METRICS_FILE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_SIDE_PX = 300
MIN_PNG_BYTES = 5_000


def png_size(path: str) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_sensible_png(path: str) -> None:
    width, height = png_size(path)
    assert width >= MIN_SIDE_PX and height >= MIN_SIDE_PX, (path, width, height)
    assert os.path.getsize(path) > MIN_PNG_BYTES, path


def assert_page_shows(index: str, expected: set[str]) -> None:
    """index.html references exactly `expected` PNGs by relative path, and each is a sensible PNG."""
    with open(index, encoding="utf-8") as handle:
        page = handle.read()
    sources = set(re.findall(r'<img src="([^"]+)"', page))
    assert sources == expected
    for source in sources:
        assert "/" not in source and "://" not in source
        assert_sensible_png(os.path.join(os.path.dirname(index), source))


def render(figure, folder) -> str:
    report_page.use_agg()
    return os.path.join(folder, report_page.save_figure(figure, str(folder), "figure.png"))


def _ecg(seed: int = 0) -> np.ndarray:
    """(5000, 12) mV: a 1.2 Hz spike train with a T wave, different per lead, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(ECG_SHAPE[0]) / SAMPLING_RATE_HZ
    phase = (t * 1.2) % 1.0
    beat = 1.2 * np.exp(-(((phase - 0.3) / 0.012) ** 2)) + 0.25 * np.exp(-(((phase - 0.6) / 0.05) ** 2))
    gains = np.linspace(-1.0, 1.5, NUM_LEADS)
    return (beat[:, None] * gains + 0.02 * rng.normal(size=ECG_SHAPE)).astype(np.float32)


SUMMARY = {
    "files_found": {"train": 26, "test": 5},
    "examples_written": {"train": 20, "test": 5},
    "rejected": {"train": {"bad_shape": 1, "missing_label": 1, "non_finite": 2, "not_matlab": 2}, "test": {}},
    "rejected_total": {"train": 6, "test": 0},
    "reconciled": True,
    "error_rate": {"train": 0.230769, "test": 0.0},
    "max_error_rate": 0.1,
    "error_rate_exceeded": ["train"],
    "quality": {"train": {"records_flagged": 2,
                          "flat_lead": {"records": 2, "by_lead": {"V2": 2, "V4": 1}, "record_ids": ["A", "B"]},
                          "clipped": {"records": 1, "by_lead": {"I": 1}, "record_ids": ["B"]}},
                "test": {"records_flagged": 0, "flat_lead": {"records": 0, "by_lead": {}},
                         "clipped": {"records": 0, "by_lead": {}}}},
    "class_balance": {"train": {"normal": 12, "abnormal": 8, "unlabelled": 0},
                      "test": {"normal": 0, "abnormal": 1, "unlabelled": 4}},
    "label_file_findings": {"label_without_file": 1},
    "lead_statistics": {"leads": list(LEAD_NAMES), "mean_mv": np.linspace(-0.2, 0.3, NUM_LEADS).tolist(),
                        "std_mv": np.linspace(0.1, 0.5, NUM_LEADS).tolist()},
    "runner": "FnApiRunner", "wall_time_s": 3.2,
}


@pytest.mark.parametrize("draw", [figures.counts_figure, figures.class_balance_figure, figures.lead_statistics_figure,
                                  figures.quality_figure])
def test_pipeline_summary_figures_render(draw, tmp_path):
    assert_sensible_png(render(draw(SUMMARY), tmp_path))


def test_quality_figure_without_per_lead_counts_shows_records_per_flag(tmp_path):
    summary = dict(SUMMARY, quality={"train": {"records_flagged": 3, "flat_lead": {"records": 3}}})
    assert_sensible_png(render(figures.quality_figure(summary), tmp_path))


@pytest.mark.parametrize("unit, scale", [("mV", 1.0), (figures.NORMALIZED_UNIT, 8.0)])
def test_twelve_lead_figure_renders_standard_layout(unit, scale, tmp_path):
    figure = ecg_plot.twelve_lead_figure(_ecg() * scale, "synthetic", unit=unit)
    assert len(figure.axes) == len(ecg_plot.STANDARD_ROWS) + 1  # three rows of four leads, one rhythm strip
    shown = {text.get_text() for ax in figure.axes for text in ax.texts}
    assert set(LEAD_NAMES) <= shown | {f"{ecg_plot.RHYTHM_LEAD} (rhythm)"}
    assert figure.axes[-1].get_xlim() == (0.0, 10.0)
    assert unit in figure.axes[0].get_ylabel()
    assert_sensible_png(render(figure, tmp_path))


def test_ecg_figure_draws_a_runs_lead_subset_at_its_rate_and_window(tmp_path):
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    ecg = _ecg()[:1250, [LEAD_NAMES.index(lead) for lead in leads]]  # 5 s at 250 Hz, 8 leads
    figure = ecg_plot.twelve_lead_figure(ecg, "eight leads", sampling_rate_hz=250.0, lead_names=leads)
    assert len(figure.axes) == len(ecg_plot.STANDARD_ROWS) + 1  # every standard row keeps a lead
    shown = {text.get_text() for ax in figure.axes for text in ax.texts}
    assert shown == set(leads) | {"II (rhythm)"}  # the leads not kept (aVR, III, ...) are not drawn
    assert figure.axes[-1].get_xlim() == (0.0, 5.0)
    assert ecg_plot.layout(leads)[0][0] == ("I", None, "V1", "V4")  # each lead at its standard place
    assert ecg_plot.layout(("V1", "X"))[1] == "V1" and ecg_plot.layout(("V1", "X"))[0] == [
        (None, None, "V1", None), ("X", None, None, None)]
    with pytest.raises(ValueError):
        ecg_plot.twelve_lead_figure(_ecg(), "twelve columns, eight names", lead_names=leads)
    assert_sensible_png(render(figure, tmp_path))


def test_the_example_is_decoded_at_the_geometry_of_the_runs_summary():
    geometry = Geometry(250.0, 5.0, ("I", "II", "V1"))
    summary = {"decoding": {"geometry": geometry.to_json()}}
    assert run_geometry(summary) == geometry
    assert run_geometry({}) == run_geometry({"decoding": {}}) == DEFAULT_GEOMETRY  # a summary before geometry
    with pytest.raises(ValueError):
        run_geometry({"decoding": {"geometry": {"leads": []}}})


def test_pipeline_page_references_every_figure_and_degrades_without_optional_sections(tmp_path):
    index = report.build(str(tmp_path), SUMMARY, example=None)
    assert_page_shows(index, {figures.COUNTS_PNG, figures.CLASS_BALANCE_PNG, figures.LEAD_STATISTICS_PNG,
                              figures.QUALITY_PNG})
    bare = {k: v for k, v in SUMMARY.items() if k not in ("quality", "class_balance")}
    index = report.build(str(tmp_path), bare, example=None)
    assert_page_shows(index, {figures.COUNTS_PNG, figures.LEAD_STATISTICS_PNG})
    page = open(index, encoding="utf-8").read()
    assert "no <code>quality</code> section" in page and "no <code>class_balance</code>" in page


def test_a_report_failure_is_recorded_not_raised(tmp_path):
    entry = report.build_safely(str(tmp_path), {"files_found": {"train": 1}}, [], SAMPLING_RATE_HZ, False)
    assert entry["status"] == report.STATUS_FAILED and "KeyError" in entry["error"]
    assert not os.path.exists(tmp_path / REPORT_DIR)


# --- training report ----------------------------------------------------------------------------------


def _training_run(model_dir, normal: int = 30, abnormal: int = 20, legacy: bool = False) -> dict:
    """A metrics.json-shaped dict and validation_predictions.csv as train.run writes them (`legacy`:
    as it wrote them before intervals and counts, without `validation_metrics`)."""
    rng = np.random.default_rng(1)
    labels = np.array([0] * normal + [1] * abnormal)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.15), 0.0, 1.0)
    threshold = evaluation.choose_threshold(labels, scores)
    epochs = 12
    decay = np.exp(-np.arange(epochs) / 4)
    score = evaluation.binary_metrics if legacy else evaluation.validation_metrics
    metrics = {"threshold": threshold, "threshold_criterion": "youden",
               "validation": score(labels, scores, threshold),
               "class_counts": {"train": {"normal": 4 * normal, "abnormal": 4 * abnormal},
                                "validation": {"normal": normal, "abnormal": abnormal}},
               "epochs_run": epochs, "best_epoch": 9, "training_seconds": 12.5,
               "history": {"loss": (0.3 + 0.5 * decay).tolist(), "auc": (0.95 - 0.4 * decay).tolist(),
                           "val_loss": (0.35 + 0.45 * decay).tolist(), "val_auc": (0.9 - 0.4 * decay).tolist()}}
    os.makedirs(model_dir, exist_ok=True)
    layout.write_validation_predictions(os.path.join(model_dir, layout.VALIDATION_PREDICTIONS_FILE),
                                                 labels, scores)
    with open(os.path.join(model_dir, METRICS_FILE), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle)
    return metrics


def test_training_figures_render(tmp_path):
    metrics = _training_run(tmp_path)
    labels, scores = layout.read_validation_predictions(
        str(tmp_path / layout.VALIDATION_PREDICTIONS_FILE))
    threshold = metrics["threshold"]
    for k, figure in enumerate([training_report.learning_curves_figure(metrics["history"], metrics["best_epoch"]),
                                training_report.roc_figure(labels, scores, threshold),
                                training_report.confusion_figure(metrics["validation"]["confusion"], threshold),
                                training_report.probability_histogram_figure(labels, scores, threshold)]):
        folder = tmp_path / str(k)
        folder.mkdir()
        assert_sensible_png(render(figure, folder))


def test_training_page_is_built_from_metrics_json_and_predictions(tmp_path):
    _training_run(tmp_path)
    index = training_report.build(str(tmp_path))
    assert_page_shows(index, {training_report.LEARNING_CURVES_PNG, training_report.ROC_PNG,
                              training_report.CONFUSION_PNG, training_report.HISTOGRAM_PNG})


def _page(index: str) -> str:
    with open(index, encoding="utf-8") as handle:
        return handle.read()


def test_training_page_warns_when_a_validation_class_is_small(tmp_path):
    """One normal validation record (the issue's case): a visible warning with the caveat, the counts
    and the intervals; none for a split with enough of each class."""
    metrics = _training_run(tmp_path / "small", normal=1, abnormal=12)
    page = _page(training_report.build(str(tmp_path / "small")))
    warning = re.search(r'<span class="warning">([^<]*)</span>', page)
    assert warning and metrics["validation"]["caveat"] in warning.group(1)
    assert "only 1 normal and 12 abnormal" in warning.group(1)
    assert "<th>95% interval</th>" in page and "<th>TN</th>" in page
    low, high = metrics["validation"]["interval_95"]["auc"]
    assert f"{low:.3f} to {high:.3f}" in page

    _training_run(tmp_path / "large", normal=30, abnormal=20)
    page = _page(training_report.build(str(tmp_path / "large")))
    assert 'class="warning"' not in page and "unreliable:" not in page
    assert "<th>95% interval</th>" in page


def test_training_page_of_an_older_metrics_json_computes_intervals_and_caveat(tmp_path):
    _training_run(tmp_path, normal=3, abnormal=20, legacy=True)
    page = _page(training_report.build(str(tmp_path)))
    assert "only 3 normal and 20 abnormal" in page and "n/a" not in page


def test_validation_predictions_with_the_former_header_still_read(tmp_path):
    path = tmp_path / layout.VALIDATION_PREDICTIONS_FILE
    path.write_text("label,probability\n1,0.8\n0,0.3\n", encoding="utf-8")
    labels, scores = layout.read_validation_predictions(str(path))
    assert labels.tolist() == [1, 0] and scores.tolist() == [0.8, 0.3]
    layout.write_validation_predictions(str(path), labels, scores)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "true_label,probability"


def test_histogram_gives_every_class_its_own_visible_panel():
    """A class of one record next to a class of 200 in the same bin: each class has its own panel with
    only its bars, holding all its records, and its tallest bar reaches the top half of the panel."""
    labels = np.array([0] + [1] * 200)
    scores = np.full(len(labels), 0.62)
    figure = training_report.probability_histogram_figure(labels, scores, 0.5)
    panels = [ax for ax in figure.axes if ax.patches]
    assert len(panels) == 2
    for ax, label in zip(panels, (0, 1)):
        heights = [patch.get_height() for patch in ax.patches]
        colors = {patch.get_facecolor()[:3] for patch in ax.patches}
        assert sum(heights) == np.sum(labels == label)
        assert len(colors) == 1  # one class per panel: nothing drawn over it
        assert max(heights) >= 0.5 * ax.get_ylim()[1], (label, max(heights), ax.get_ylim())
        assert f"({np.sum(labels == label)})" in ax.get_title()


def test_roc_curve_area_is_the_exact_auc():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)  # many ties
    fpr, tpr, thresholds = evaluation.roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(thresholds) < 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(evaluation.roc_auc(labels, scores), abs=1e-12)


# --- end to end ---------------------------------------------------------------------------------------


def test_pipeline_run_publishes_its_report(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    generate_dataset(str(data), 8, 2, seed=5)
    assert pipeline_main(["--train_dir", str(data / "TRAIN"), "--labels", str(data / "reference.txt"),
                          "--test_dir", str(data / "TEST"), "--output_dir", str(out)]) == EXIT_OK
    with open(out / "run_summary.json", encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["report"]["status"] == report.STATUS_WRITTEN
    first_by_path = sorted(name for name in os.listdir(data / "TRAIN") if name.endswith(".mat"))[0]
    assert summary["report"]["example"]["record_id"] == first_by_path[:-len(".mat")]  # the synthetic set is clean
    assert summary["class_balance"]["train"]["normal"] + summary["class_balance"]["train"]["abnormal"] == 8
    assert summary["class_balance"]["test"]["unlabelled"] == 2
    index = out / summary["report"]["index"]
    assert_page_shows(str(index), {figures.COUNTS_PNG, figures.CLASS_BALANCE_PNG, figures.LEAD_STATISTICS_PNG,
                                   figures.QUALITY_PNG, figures.EXAMPLE_RAW_PNG, figures.EXAMPLE_NORMALIZED_PNG})
    assert summary["report"]["example"]["record_id"] in index.read_text(encoding="utf-8")
