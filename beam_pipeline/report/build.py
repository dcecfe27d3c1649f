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
no half-written report folder is left. `python -m beam_pipeline.report OUT` (`__main__.py`) rebuilds
the report of a published output from its `run_summary.json`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.discovery import RecordSource
from beam_pipeline.inputs.local_files import is_local
from beam_pipeline.report.ecg_plot import layout as ecg_layout
from beam_pipeline.report.example import Example, choose_example, example_figures, run_geometry
from beam_pipeline.report.figures import (CLASS_BALANCE_PNG, COUNTS_PNG, EXAMPLE_NORMALIZED_PNG, EXAMPLE_RAW_PNG,
                                          LEAD_STATISTICS_PNG, QUALITY_PNG, class_balance_figure, counts_figure,
                                          lead_statistics_figure, quality_figure, quality_flags)
from beam_pipeline.report.written import flagged_paths, written_sources
from ecg_common import report_page
from ecg_common.layout import REPORT_DIR, SUMMARY_CLASSES_KEY, SUMMARY_FILE
from ecg_common.report_page import Section, Table, text
from ecg_common.schema import DEFAULT_GEOMETRY, LEAD_NAMES, TRAIN_SPLIT, Geometry

STATUS_WRITTEN, STATUS_FAILED = "written", "failed"
_log = logging.getLogger(__name__)


def _count_sections(summary: dict, figures: dict[str, str]) -> list[Section]:
    splits = list(summary["files_found"])
    written = summary.get("records_written", summary["examples_written"])
    totals = Table(["split", "found", "written", "rejected", "error rate", "examples (windows)"],
                   [[s, summary["files_found"][s], written[s],
                     summary.get("rejected_total", {}).get(s, sum(summary["rejected"].get(s, {}).values())),
                     f"{summary.get('error_rate', {}).get(s, 0.0):.1%}", summary["examples_written"][s]]
                    for s in splits])
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
        sections.append(Section("Class balance", _class_notes(summary), [table], [figures[CLASS_BALANCE_PNG]]))
    else:
        sections.append(Section("Class balance", ["run_summary.json has no <code>class_balance</code>."]))
    sections.append(_demographics_section(summary))
    return sections


def _demographics_section(summary: dict) -> Section:
    """Age (decades) and sex of the records written, per split, from the headers and CPSC structs."""
    demographics = summary.get("demographics")
    if not demographics:
        return Section("Age and sex", ["run_summary.json has no <code>demographics</code>."])
    splits = list(demographics)
    tables = []
    for field, title in (("age_years", "age (years)"), ("sex", "sex")):
        names = list(next(iter(demographics.values()))[field])
        tables.append(Table([title] + splits, [[name] + [demographics[s][field].get(name, 0) for s in splits]
                                               for name in names]))
    return Section("Age and sex of the records written",
                   ["One count per record written (not per window), from the WFDB header's <code># Age:</code> "
                    "and <code># Sex:</code> lines or the CPSC struct's <code>age</code> and <code>sex</code>; "
                    "<code>unknown</code> where the record does not say. Examples carry them as the "
                    "<code>age</code> and <code>sex</code> features."], tables)


def _class_notes(summary: dict) -> list[str]:
    """Multi-label runs: where the classes come from and the codes ignored (outside every class), per split."""
    classes = summary.get(SUMMARY_CLASSES_KEY)
    if not classes:
        return []
    notes = [f"Records per class (multi-label: a record counts in each of its classes); {len(classes['names'])} "
             f"classes, in the order of <code>classes.txt</code>."]
    for split, ignored in classes.get("ignored_codes", {}).items():
        if ignored:
            shown = ", ".join(f"{text(code)} ({n})" for code, n in sorted(ignored.items(), key=lambda item: -item[1]))
            notes.append(f"{text(split)}: {len(ignored)} codes outside every class, ignored (records): {shown}.")
    return notes


def _statistics_section(summary: dict, figures: dict[str, str]) -> Section:
    stats = summary["lead_statistics"]
    table = Table(["lead", "mean (mV)", "std (mV)"], list(zip(stats["leads"], stats["mean_mv"], stats["std_mv"])))
    return Section("Per-lead normalization statistics",
                   ["Learned by tf.Transform over the written training examples and read back from "
                    "<code>transform_fn/</code>; every example is stored as (x - mean) / std per lead."],
                   [table], [figures[LEAD_STATISTICS_PNG]])


def _example_section(example: Example | None, figures: dict[str, str], problem: str | None,
                     geometry: Geometry = DEFAULT_GEOMETRY) -> Section:
    if example is None or problem:
        return Section("One example record", [text(problem or "no training example was written")])
    where = text(example.path) + (f" (header {text(example.header_path)})" if example.header_path else "")
    window = geometry.window_s
    rhythm = ecg_layout(geometry.lead_names)[1]
    return Section("One example record, before and after normalization",
                   [f"Record <b>{text(example.record_id)}</b> from {where}: the first written training record "
                    "without a quality flag (the first written one if every record is flagged), its first "
                    f"{window:g} s window as the run decoded it ({text(geometry.describe())}). Standard layout: "
                    f"rows of four {window / 4:g} s columns, each from its own quarter of the {window:g} s (a lead "
                    f"the run does not keep leaves its column blank), and lead {text(rhythm)} over {window:g} s as "
                    "a rhythm strip. The normalized version is the raw record run through the saved transform "
                    "graph, exactly what the TFRecords hold."],
                   figures=[figures[EXAMPLE_RAW_PNG], figures[EXAMPLE_NORMALIZED_PNG]])


def _quality_section(summary: dict, figures: dict[str, str]) -> Section:
    quality = summary.get("quality")
    if not quality:
        return Section("Signal quality", ["run_summary.json has no <code>quality</code> section: "
                                          "nothing to show."])
    flags = sorted({flag for split in quality.values() for flag in quality_flags(split)})
    notes = [f"Flags assessed by this run: {text(', '.join(flags) or 'none')}. Flagged records are kept "
             "(and listed in <code>quality/&lt;split&gt;.jsonl</code>) unless the run was given "
             "<code>--reject_flagged</code>. A record can raise a flag on several leads."]
    if any("by_lead" not in entry for split in quality.values() for entry in quality_flags(split).values()):
        notes.append("The summary has no per-lead counts for some flag: the figure shows records per flag.")
    rows = [[split, flag, entry.get("records", 0)] + [entry.get("by_lead", {}).get(lead, 0) for lead in LEAD_NAMES]
            for split, split_quality in quality.items() for flag, entry in quality_flags(split_quality).items()]
    table = Table(["split", "flag", "records"] + list(LEAD_NAMES), rows)
    return Section("Signal quality per lead", notes, [table] if rows else [], [figures[QUALITY_PNG]])


def _intro(summary: dict) -> list[str]:
    summary_file = SUMMARY_FILE
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
    problem, geometry = None, DEFAULT_GEOMETRY
    if example is not None:
        try:
            geometry = run_geometry(summary)  # the run's rate, window and leads: what its graph takes
            raw, normalized = example_figures(transform_dir or out_dir, example, geometry)
            save(EXAMPLE_RAW_PNG, raw)
            save(EXAMPLE_NORMALIZED_PNG, normalized)
        except (OSError, ValueError) as error:  # the file vanished or changed since the run read it
            problem = f"the example record could not be drawn: {error}"
    sections = _count_sections(summary, figures) + [_statistics_section(summary, figures),
                                                    _example_section(example, figures, problem, geometry)]
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
    with FileSystems.open(FileSystems.join(out_dir, SUMMARY_FILE)) as handle:
        summary = json.loads(handle.read().decode("utf-8"))
    recorded = (summary.get("report") or {}).get("example")
    return build(out_dir, summary, Example(**recorded) if recorded else None)
