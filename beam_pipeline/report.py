"""The run report: `OUT/report/index.html` and the PNGs it shows, drawn from `run_summary.json` and the data.

People trust a data set after looking at it: what went in, what was rejected and why, the class
balance, what normalization does to a real record, and which leads look broken. Every number and
picture comes from the run summary (the machine-readable source, passed in or read from
`OUT/run_summary.json`) and from the run's own files, never typed in:

    counts.png              files found, examples written and rejections by reason, per split
    class_balance.png       examples per class (summary `class_balance`)
    lead_statistics.png     the 12 per-lead means and standard deviations (mV) the transform applies
    example_raw.png         one training record as decoded, standard 12-lead layout on ECG paper
    example_normalized.png  the same record through the saved transform graph (what the TFRecords hold)
    quality.png             signal-quality flags per lead (summary `quality`, from `quality.py`)

The example is the first written training record (by path) that raised no quality flag, else the
first written one: deterministic, and representative rather than the odd flat-lead file. The run
records rejected paths, not written ones, so `written.py` derives them from discovery and `errors/`.
A section whose summary key is absent (an older summary, a reprocessing run) says so instead of failing.

The job calls `build_safely` before publishing: a report that cannot be drawn must not lose a
finished run, so a failure is logged and recorded as `report.status = "failed"` in the summary, and
no half-written report folder is left. `python -m beam_pipeline.report OUT` rebuilds the report of a
published output from its `run_summary.json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import report_page
from beam_pipeline.decode import decode_record
from beam_pipeline.discovery import RecordSource
from beam_pipeline.publish import is_local
from beam_pipeline.report_page import Section, Table, text
from beam_pipeline.schema import LEAD_NAMES, SAMPLING_RATE_HZ, TRAIN_SPLIT
from beam_pipeline.written import flagged_paths, written_sources

REPORT_DIR = "report"
STATUS_WRITTEN, STATUS_FAILED = "written", "failed"

COUNTS_PNG = "counts.png"
CLASS_BALANCE_PNG = "class_balance.png"
LEAD_STATISTICS_PNG = "lead_statistics.png"
EXAMPLE_RAW_PNG = "example_raw.png"
EXAMPLE_NORMALIZED_PNG = "example_normalized.png"
QUALITY_PNG = "quality.png"

NORMALIZED_UNIT = "SD"
"""Unit of a normalized lead: standard deviations of that lead over the training set."""

COLORS = {"found": "#7f8c8d", "written": "#2e86c1", "rejected": "#c0392b",
          "normal": "#27ae60", "abnormal": "#d35400", "unlabelled": "#95a5a6"}
FLAG_COLORS = ("#8e44ad", "#e67e22", "#16a085", "#c0392b")
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
    """The record drawn before and after normalization, and how it was decoded (to redraw it later)."""

    record_id: str
    path: str
    header_path: str | None = None
    default_sampling_rate: float = SAMPLING_RATE_HZ
    pad_short: bool = False


def choose_example(written: list[RecordSource], flagged: set[str], default_sampling_rate: float,
                   pad_short: bool) -> Example | None:
    """The first written record without a quality flag, else the first written one; None when none was written."""
    if not written:
        return None
    source = next((s for s in written if s.path not in flagged), written[0])
    return Example(source.record_id, source.path, source.header_path, default_sampling_rate, pad_short)


def decode_example(example: Example) -> np.ndarray:
    """The example's (5000, 12) mV signal, decoded exactly as the pipeline decoded it."""
    with FileSystems.open(example.path) as handle:
        mat_bytes = handle.read()
    header = None
    if example.header_path:
        with FileSystems.open(example.header_path) as handle:
            header = handle.read().decode("utf-8", "replace")
    result = decode_record(mat_bytes, header, default_sampling_rate=example.default_sampling_rate,
                           pad_short=example.pad_short)
    if not isinstance(result, np.ndarray):
        raise ValueError(f"example {example.path} no longer decodes: {result.reason}: {result.detail}")
    return result


# --- figures (each returns a matplotlib Figure, or None when the summary lacks its data) --------------


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), facecolor="white", layout="constrained")


def counts_figure(summary: dict):
    """Per split, horizontal bars: files found, examples written, then each rejection reason."""
    splits = list(summary["files_found"])
    bars = max(2 + len(summary["rejected"].get(split, {})) for split in splits)
    figure = _new_figure(6.0 * len(splits) + 1.0, max(3.0, 1.2 + 0.42 * bars))
    for k, split in enumerate(splits):
        ax = figure.add_subplot(1, len(splits), k + 1)
        reasons = sorted(summary["rejected"].get(split, {}).items(), key=lambda item: (-item[1], item[0]))
        names = ["found", "written"] + [f"rejected: {reason}" for reason, _ in reasons]
        values = [summary["files_found"][split], summary["examples_written"][split]] + [n for _, n in reasons]
        colors = [COLORS["found"], COLORS["written"]] + [COLORS["rejected"]] * len(reasons)
        positions = np.arange(len(names))[::-1]
        bars = ax.barh(positions, values, color=colors)
        ax.bar_label(bars, padding=3, fontsize=9)
        ax.set_yticks(positions, names, fontsize=9)
        ax.set_xlim(0, max(values + [1]) * 1.15)
        ax.set_xlabel("files")
        rejected = summary.get("rejected_total", {}).get(split, sum(n for _, n in reasons))
        over = split in summary.get("error_rate_exceeded", [])
        rate = summary.get("error_rate", {}).get(split)
        rate_text = f", {rate:.1%} rejected" if rate is not None else ""
        ax.set_title(f"{split}: {values[0]} found, {values[1]} written, {rejected} rejected{rate_text}"
                     + (" (over budget)" if over else ""), fontsize=10, color=COLORS["rejected"] if over else "black")
        ax.grid(axis="x", color="#e5e5e5")
        ax.set_axisbelow(True)
    return figure


def class_balance_figure(summary: dict):
    """Examples per class and split, with each class's share of the labelled examples."""
    balance = summary.get("class_balance")
    if not balance:
        return None
    splits = list(balance)
    classes = [name for name in next(iter(balance.values())) if any(balance[s].get(name) for s in splits)]
    classes = classes or list(next(iter(balance.values())))
    figure = _new_figure(max(5.0, 2.2 * len(splits) + 3.0), 3.8)
    ax = figure.add_subplot()
    width = 0.8 / len(classes)
    for c, name in enumerate(classes):
        values = [balance[s].get(name, 0) for s in splits]
        labelled = [sum(n for key, n in balance[s].items() if key != "unlabelled") for s in splits]
        bars = ax.bar(np.arange(len(splits)) + (c - (len(classes) - 1) / 2) * width, values, width,
                      label=name, color=COLORS.get(name))
        shares = [f"{v}\n({v / total:.0%})" if total and name != "unlabelled" else f"{v}"
                  for v, total in zip(values, labelled)]
        ax.bar_label(bars, labels=shares, padding=2, fontsize=8)
    ax.set_xticks(np.arange(len(splits)), splits)
    ax.set_ylabel("examples written")
    ax.set_ylim(0, max([max(b.values()) for b in balance.values()] + [1]) * 1.3)
    ax.legend(fontsize=9, loc="upper right")
    ax.set_title("class balance of the written examples (share of the labelled ones)", fontsize=10)
    ax.grid(axis="y", color="#e5e5e5")
    ax.set_axisbelow(True)
    return figure


def lead_statistics_figure(summary: dict):
    """The per-lead means and standard deviations (mV) learned on the training set, side by side."""
    stats = summary["lead_statistics"]
    leads, means, stds = stats["leads"], stats["mean_mv"], stats["std_mv"]
    figure = _new_figure(12.0, 3.8)
    positions = np.arange(len(leads))
    for k, (values, name, color) in enumerate(((means, "mean", "#2e86c1"), (stds, "standard deviation", "#8e44ad"))):
        ax = figure.add_subplot(1, 2, k + 1)
        bars = ax.bar(positions, values, color=color)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2, fontsize=7)
        ax.axhline(0, color="#555", linewidth=0.8)
        ax.set_xticks(positions, leads, fontsize=9)
        ax.set_ylabel("mV")
        low, high = min(min(values), 0.0), max(max(values), 0.0)
        margin = 0.15 * (high - low or 1.0)
        ax.set_ylim(low - (margin if low < 0 else 0), high + margin)
        ax.set_title(f"per-lead {name} over the training set (mV)", fontsize=10)
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
    return figure


def _records(count: int) -> str:
    return f"{count} record" + ("" if count == 1 else "s")


def _flags(split_quality: dict) -> dict[str, dict]:
    """The flag entries of one split's quality summary (every dict value: `flat_lead`, `clipped`, ...)."""
    return {flag: entry for flag, entry in split_quality.items() if isinstance(entry, dict)}


def quality_figure(summary: dict):
    """Per split, records flagged per lead and flag; only records per flag when the summary has no per-lead counts."""
    from matplotlib.ticker import MaxNLocator

    quality = summary.get("quality")
    if not quality:
        return None
    splits = list(quality)
    figure = _new_figure(12.0, 3.2 * len(splits) + 0.4)
    for k, split in enumerate(splits):
        ax = figure.add_subplot(len(splits), 1, k + 1)
        flags = _flags(quality[split])
        written = summary.get("examples_written", {}).get(split)
        flagged = quality[split].get("records_flagged", 0)
        title = f"{split}: {_records(flagged)} flagged" + (f" of {written} written" if written is not None else "")
        if flags and all("by_lead" in entry for entry in flags.values()):
            width = 0.8 / len(flags)
            for f, (flag, entry) in enumerate(flags.items()):
                values = [entry["by_lead"].get(lead, 0) for lead in LEAD_NAMES]
                bars = ax.bar(np.arange(len(LEAD_NAMES)) + (f - (len(flags) - 1) / 2) * width, values, width,
                              label=f"{flag} ({_records(entry.get('records', sum(values)))})",
                              color=FLAG_COLORS[f % len(FLAG_COLORS)])
                ax.bar_label(bars, labels=[str(v) if v else "" for v in values], padding=1, fontsize=7)
            ax.set_xticks(np.arange(len(LEAD_NAMES)), LEAD_NAMES)
            ax.set_ylabel("records flagged")
        else:
            names = list(flags) or ["(no flag)"]
            values = [entry.get("records", 0) for entry in flags.values()] or [0]
            bars = ax.bar(names, values, color=FLAG_COLORS[0], label="records per flag (no per-lead counts)")
            ax.bar_label(bars, padding=1, fontsize=8)
            ax.set_ylabel("records flagged")
        top = max([p.get_height() for p in ax.patches] + [0])
        ax.set_ylim(0, max(top * 1.25, 1))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if not flagged:
            ax.text(0.5, 0.5, "no record flagged", transform=ax.transAxes, ha="center", va="center", color="#555")
        ax.legend(fontsize=8, loc="upper right")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
    return figure


def example_figures(transform_dir: str, example: Example) -> tuple[object, object]:
    """The example record as decoded (mV) and as normalized by the saved transform graph (SD)."""
    from beam_pipeline.ecg_plot import twelve_lead_figure
    from beam_pipeline.statistics import transform_ecgs  # TensorFlow: only when an example is drawn

    raw = decode_example(example)
    normalized = transform_ecgs(transform_dir, raw[None])[0]
    name = example.record_id.replace("$", r"\$")  # a plain title, not matplotlib math
    return (twelve_lead_figure(raw, f"{name}: as decoded (mV)"),
            twelve_lead_figure(normalized, f"{name}: normalized, (x - mean) / std per lead", unit=NORMALIZED_UNIT))


# --- the page ------------------------------------------------------------------------------------------


def _count_sections(summary: dict, figures: dict[str, str]) -> list[Section]:
    splits = list(summary["files_found"])
    totals = Table(["split", "found", "written", "rejected", "error rate"],
                   [[s, summary["files_found"][s], summary["examples_written"][s],
                     summary.get("rejected_total", {}).get(s, sum(summary["rejected"].get(s, {}).values())),
                     f"{summary.get('error_rate', {}).get(s, 0.0):.1%}"] for s in splits])
    reasons = sorted({r for s in splits for r in summary["rejected"].get(s, {})})
    by_reason = Table(["reason"] + splits, [[r] + [summary["rejected"].get(s, {}).get(r, 0) for s in splits]
                                            for r in reasons])
    notes = [f"Each rejected file has a line in <code>errors/&lt;split&gt;.jsonl</code> (path, reason, detail). "
             f"Files reconciled (found = written + rejected): <b>{text(summary.get('reconciled'))}</b>."]
    if summary.get("label_file_findings"):
        findings = ", ".join(f"{text(k)}: {v}" for k, v in summary["label_file_findings"].items())
        notes.append(f"Labels-file findings (<code>errors/labels.jsonl</code>): {findings}.")
    sections = [Section("Files: found, written, rejected", notes, [totals] + ([by_reason] if reasons else []),
                        [figures[COUNTS_PNG]])]
    if CLASS_BALANCE_PNG in figures:
        balance = summary["class_balance"]
        classes = list(next(iter(balance.values())))
        table = Table(["split"] + classes, [[s] + [balance[s].get(c, 0) for c in classes] for s in balance])
        sections.append(Section("Class balance", [], [table], [figures[CLASS_BALANCE_PNG]]))
    else:
        sections.append(Section("Class balance", ["run_summary.json has no <code>class_balance</code>."]))
    return sections


def _statistics_section(summary: dict, figures: dict[str, str]) -> Section:
    stats = summary["lead_statistics"]
    table = Table(["lead", "mean (mV)", "std (mV)"], list(zip(stats["leads"], stats["mean_mv"], stats["std_mv"])))
    return Section("Per-lead normalization statistics",
                   ["Learned by tf.Transform over the written training examples and read back from "
                    "<code>transform_fn/</code>; every example is stored as (x - mean) / std per lead."],
                   [table], [figures[LEAD_STATISTICS_PNG]])


def _example_section(example: Example | None, figures: dict[str, str], problem: str | None) -> Section:
    if example is None or problem:
        return Section("One example record", [text(problem or "no training example was written")])
    where = text(example.path) + (f" (header {text(example.header_path)})" if example.header_path else "")
    return Section("One example record, before and after normalization",
                   [f"Record <b>{text(example.record_id)}</b> from {where}: the first written training record "
                    "without a quality flag (the first written one if every record is flagged). Standard layout: three rows of four 2.5 s columns, each from its "
                    "own quarter of the 10 s, and lead II over 10 s as a rhythm strip. The normalized version "
                    "is the raw record run through the saved transform graph, exactly what the TFRecords hold."],
                   figures=[figures[EXAMPLE_RAW_PNG], figures[EXAMPLE_NORMALIZED_PNG]])


def _quality_section(summary: dict, figures: dict[str, str]) -> Section:
    quality = summary.get("quality")
    if not quality:
        return Section("Signal quality", ["run_summary.json has no <code>quality</code> section: "
                                          "nothing to show."])
    flags = sorted({flag for split in quality.values() for flag in _flags(split)})
    notes = [f"Flags assessed by this run: {text(', '.join(flags) or 'none')}. Flagged records are kept "
             "(and listed in <code>quality/&lt;split&gt;.jsonl</code>) unless the run was given "
             "<code>--reject_flagged</code>. A record can raise a flag on several leads."]
    if any("by_lead" not in entry for split in quality.values() for entry in _flags(split).values()):
        notes.append("The summary has no per-lead counts for some flag: the figure shows records per flag.")
    rows = [[split, flag, entry.get("records", 0)] + [entry.get("by_lead", {}).get(lead, 0) for lead in LEAD_NAMES]
            for split, split_quality in quality.items() for flag, entry in _flags(split_quality).items()]
    table = Table(["split", "flag", "records"] + list(LEAD_NAMES), rows)
    return Section("Signal quality per lead", notes, [table] if rows else [], [figures[QUALITY_PNG]])


def _summary_file() -> str:
    """The job's name for the summary (imported late: the job imports this module)."""
    from beam_pipeline.job import SUMMARY_FILE

    return SUMMARY_FILE


def _intro(summary: dict) -> list[str]:
    summary_file = _summary_file()
    intro = [f"Runner {text(summary.get('runner', '?'))}, wall time {text(summary.get('wall_time_s', '?'))} s. "
             f"Every number here comes from <a href=\"../{summary_file}\">{summary_file}</a> "
             "(the machine-readable source) and the run's own files."]
    if summary.get("error_rate_exceeded"):
        intro.append(f"<span class=\"warning\">Error rate above --max_error_rate {summary.get('max_error_rate')} "
                     f"for: {text(', '.join(summary['error_rate_exceeded']))}. The run exited with status 1."
                     "</span>")
    return intro


def build(out_dir: str, summary: dict, example: Example | None, transform_dir: str | None = None) -> str:
    """Draws the report of the run in `out_dir` into `out_dir/report/`; returns the index's path.

    `transform_dir` holds the transform applied (default `out_dir`). Renders into a local folder and
    copies it when `out_dir` is on an object store.
    """
    report_page.use_agg()
    destination = FileSystems.join(out_dir, REPORT_DIR)
    local = destination if is_local(out_dir) else tempfile.mkdtemp(prefix="ecg-report-")
    folder = report_page.fresh_folder(local)
    figures: dict[str, str] = {}

    def save(name: str, figure) -> None:
        if figure is not None:
            figures[name] = report_page.save_figure(figure, folder, name)

    save(COUNTS_PNG, counts_figure(summary))
    save(CLASS_BALANCE_PNG, class_balance_figure(summary))
    save(LEAD_STATISTICS_PNG, lead_statistics_figure(summary))
    save(QUALITY_PNG, quality_figure(summary))
    problem = None
    if example is not None:
        try:
            raw, normalized = example_figures(transform_dir or out_dir, example)
            save(EXAMPLE_RAW_PNG, raw)
            save(EXAMPLE_NORMALIZED_PNG, normalized)
        except (OSError, ValueError) as error:  # the file vanished or changed since the run read it
            problem = f"the example record could not be drawn: {error}"
    sections = _count_sections(summary, figures) + [_statistics_section(summary, figures),
                                                    _example_section(example, figures, problem)]
    sections.append(_quality_section(summary, figures))
    index = report_page.write_page(folder, "ECG pipeline run report", _intro(summary), sections)
    if local != destination:
        _copy_folder(local, destination)
        shutil.rmtree(local, ignore_errors=True)
        return FileSystems.join(destination, report_page.INDEX_FILE)
    return index


def _copy_folder(local: str, destination: str) -> None:
    for name in sorted(os.listdir(local)):
        with open(os.path.join(local, name), "rb") as source, \
                FileSystems.create(FileSystems.join(destination, name)) as target:
            target.write(source.read())


def build_safely(out_dir: str, summary: dict, sources: list[RecordSource], default_sampling_rate: float,
                 pad_short: bool, split: str = TRAIN_SPLIT, transform_dir: str | None = None) -> dict:
    """`build` for a run: picks the example among `sources` of `split` and never raises. Returns the
    summary's `report` entry: {"status": "written", "index": "report/index.html", "example": {...}} or
    {"status": "failed", "error": ...}. `transform_dir` as in `build` (a reprocessed batch's is elsewhere)."""
    started = time.monotonic()
    try:
        written = written_sources(sources, out_dir, split)
        example = choose_example(written, flagged_paths(out_dir, split), default_sampling_rate, pad_short)
        build(out_dir, summary, example, transform_dir)
    except Exception as error:  # noqa: BLE001 - a report must never cost a finished run
        _log.warning("the run report could not be drawn; the run itself is complete", exc_info=True)
        _discard(FileSystems.join(out_dir, REPORT_DIR))
        return {"status": STATUS_FAILED, "error": f"{type(error).__name__}: {error}"}
    _log.info("run report drawn in %.1f s", time.monotonic() - started)
    entry = {"status": STATUS_WRITTEN, "index": f"{REPORT_DIR}/{report_page.INDEX_FILE}"}
    if example is not None:
        entry["example"] = dataclasses.asdict(example)
    return entry


def _discard(folder: str) -> None:
    try:
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
    except Exception:  # noqa: BLE001 - best effort; the failure is already recorded
        _log.warning("could not remove the partial report at %s", folder)


def rebuild(out_dir: str) -> str:
    """Redraws the report of a published output from its `run_summary.json` (and the example it names)."""
    with FileSystems.open(FileSystems.join(out_dir, _summary_file())) as handle:
        summary = json.loads(handle.read().decode("utf-8"))
    recorded = (summary.get("report") or {}).get("example")
    return build(out_dir, summary, Example(**recorded) if recorded else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.report",
                                     description="Redraw OUT/report/ from OUT/run_summary.json.")
    parser.add_argument("output_dir", help="a pipeline --output_dir")
    args = parser.parse_args(argv)
    print(f"wrote {rebuild(args.output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
