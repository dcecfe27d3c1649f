"""Drawing one 12-lead record the way clinicians read it: the standard printed layout on ECG paper.

Three rows of four 2.5 s columns (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6), each column taken
from its own quarter of the 10 s record as a printing electrocardiograph does, plus lead II over the
whole 10 s as a rhythm strip. The grid is the paper's: light 0.04 s x 0.1 mV boxes, darker 0.2 s x
0.5 mV boxes. At the standard 25 mm/s and 10 mm/mV one large box is square, and the figure is sized
to keep that proportion while a row stays readable; otherwise the amplitude is compressed and the
figure says so. Axes are labelled in seconds and in the record's unit (mV, or standard deviations
for a normalized record), so a reader never has to count boxes.

Used by the pipeline's run report; matplotlib is imported inside the functions so that importing
this module costs a Beam worker nothing.
"""
from __future__ import annotations

import math

import numpy as np

from ecg_common.schema import LEAD_NAMES, SAMPLING_RATE_HZ

STANDARD_ROWS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
"""The printed 3 x 4 arrangement; column k shows the k-th quarter of the recording."""

RHYTHM_LEAD = "II"

PAPER_SPEED_MM_PER_S = 25.0
PAPER_GAIN_MM_PER_UNIT = 10.0
"""Standard paper: 25 mm per second, 10 mm per mV."""

SMALL_BOX_S, SMALL_BOX_UNIT = 0.04, 0.1
LARGE_BOX_S, LARGE_BOX_UNIT = 0.2, 0.5
"""1 mm and 5 mm boxes at the standard speed and gain."""

MIN_BOX_MM = 0.7
"""Smallest drawn height of an amplitude box; below it the grid turns into a pink wash."""

BOX_FACTORS = (1, 2, 4, 10)
"""Amplitude boxes of 0.1/0.5, 0.2/1, 0.4/2 or 1/5 units: large boxes stay on round values."""

MIN_ROW_SPAN = 2.0
"""Smallest amplitude range (units) of a row, so a quiet lead is not blown up to fill the strip."""

STRIP_WIDTH_IN = 14.0
MAX_ROW_HEIGHT_IN = 2.4
"""Width of the 10 s strip, and the tallest a row may be before the amplitude is compressed."""

MINOR_GRID_COLOR = "#f7d4d4"
MAJOR_GRID_COLOR = "#e89a9a"
TRACE_COLOR = "#111111"
_LEFT_IN, _RIGHT_IN, _TOP_IN, _BOTTOM_IN, _GAP_IN = 0.7, 0.25, 0.5, 0.5, 0.08
"""Figure margins and the gap between rows, in inches, so a strip is exactly STRIP_WIDTH_IN wide."""


Row = tuple[str | None, ...]


def layout(lead_names: tuple[str, ...]) -> tuple[list[Row], str]:
    """(rows of four columns, the rhythm lead) for a record of `lead_names` (the run's `--leads`).

    The 12 leads give the standard 3 x 4 arrangement. A subset keeps each lead at its standard place
    (a column of a lead not recorded stays blank, a row of none is dropped) so a reader finds V1 where
    it always is; a lead of another name follows in extra rows. The rhythm strip is II, else the first lead."""
    known = {name.lower(): name for name in lead_names}
    rows = [tuple(known.get(lead.lower()) for lead in row) for row in STANDARD_ROWS]
    rows = [row for row in rows if any(row)]
    placed = {lead for row in rows for lead in row if lead}
    others = [lead for lead in lead_names if lead not in placed]
    columns = len(STANDARD_ROWS[0])
    rows += [tuple(others[i:i + columns]) + (None,) * (columns - len(others[i:i + columns]))
             for i in range(0, len(others), columns)]
    return rows, known.get(RHYTHM_LEAD.lower(), lead_names[0])


def _row_limits(segments: list[np.ndarray], span: float) -> tuple[float, float]:
    """Y limits of height `span` centred on the middle of what the row shows."""
    low = min(float(s.min()) for s in segments)
    high = max(float(s.max()) for s in segments)
    middle = (low + high) / 2.0
    return middle - span / 2.0, middle + span / 2.0


def _row_span(ecg: np.ndarray, rows: list[Row], rhythm_lead: str, lead_names: tuple[str, ...]) -> float:
    """One amplitude range for every row (as on paper), rounded up to whole large boxes."""
    quarter = ecg.shape[0] // 4
    widest = 0.0
    for row in rows:
        segments = [ecg[c * quarter:(c + 1) * quarter, lead_names.index(lead)] for c, lead in enumerate(row) if lead]
        widest = max(widest, max(float(s.max()) for s in segments) - min(float(s.min()) for s in segments))
    rhythm = ecg[:, lead_names.index(rhythm_lead)]
    widest = max(widest, float(rhythm.max() - rhythm.min()), MIN_ROW_SPAN)
    padded = widest * 1.1
    return math.ceil(padded / LARGE_BOX_UNIT) * LARGE_BOX_UNIT


def _box_factor(mm_per_unit: float) -> int:
    """How many paper boxes one drawn amplitude box spans, so boxes stay visible when the amplitude is compressed."""
    return next(f for f in BOX_FACTORS if f * SMALL_BOX_UNIT * mm_per_unit >= MIN_BOX_MM or f == BOX_FACTORS[-1])


def _grid_values(low: float, high: float, step: float) -> np.ndarray:
    """Multiples of `step` within [low, high] (integer multiples, so no drift over hundreds of lines)."""
    return np.arange(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1) * step


def _paper_axes(ax, seconds: float, limits: tuple[float, float], unit: str, show_time: bool, box_factor: int) -> None:
    """ECG-paper grid on `ax`, ticks labelled on whole seconds and on the large amplitude boxes.

    The grid is two line collections rather than matplotlib's tick grid: a 10 s strip has 250 small
    boxes, and one artist per tick made saving the figure several times slower."""
    from matplotlib.collections import LineCollection

    low, high = limits
    ax.set_xlim(0.0, seconds)
    ax.set_ylim(low, high)
    for (step_s, step_unit), color, width in (((SMALL_BOX_S, SMALL_BOX_UNIT * box_factor), MINOR_GRID_COLOR, 0.4),
                                              ((LARGE_BOX_S, LARGE_BOX_UNIT * box_factor), MAJOR_GRID_COLOR, 0.8)):
        lines = [[(x, low), (x, high)] for x in _grid_values(0.0, seconds, step_s)]
        lines += [[(0.0, y), (seconds, y)] for y in _grid_values(low, high, step_unit)]
        ax.add_collection(LineCollection(lines, colors=color, linewidths=width, zorder=0))
    ax.set_xticks(_grid_values(0.0, seconds, 1.0) if show_time else [])
    label_step = 1.0 if box_factor == 1 else LARGE_BOX_UNIT * box_factor
    ax.set_yticks(_grid_values(low, high, label_step))
    ax.yaxis.set_major_formatter("{x:g}")
    ax.xaxis.set_major_formatter("{x:g}")
    ax.tick_params(which="both", length=0, labelsize=7)
    ax.set_ylabel(unit, fontsize=8)
    for spine in ax.spines.values():
        spine.set_color(MAJOR_GRID_COLOR)
    if show_time:
        ax.set_xlabel("time (s)", fontsize=9)


def _label(ax, x: float, top: float, text: str) -> None:
    ax.text(x + 0.05, top - 0.08 * LARGE_BOX_UNIT, text, fontsize=9, fontweight="bold", va="top",
            ha="left", color=TRACE_COLOR, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})


def twelve_lead_figure(ecg: np.ndarray, title: str, unit: str = "mV",
                       sampling_rate_hz: float = SAMPLING_RATE_HZ, lead_names: tuple[str, ...] = LEAD_NAMES):
    """A matplotlib Figure of one (samples, leads) record, columns in `lead_names` order (the run's
    geometry; the 12 leads by default), in the standard layout (`layout`)."""
    from matplotlib.figure import Figure

    ecg = np.asarray(ecg, dtype=np.float64)
    lead_names = tuple(lead_names)
    if ecg.ndim != 2 or ecg.shape[1] != len(lead_names):
        raise ValueError(f"expected (samples, {len(lead_names)}), got {ecg.shape}")
    num_samples = ecg.shape[0]
    seconds = num_samples / sampling_rate_hz
    time = np.arange(num_samples) / sampling_rate_hz
    quarter = num_samples // 4
    lead_rows, rhythm_lead = layout(lead_names)
    span = _row_span(ecg, lead_rows, rhythm_lead, lead_names)

    inches_per_second = STRIP_WIDTH_IN / seconds
    standard_row_in = span * inches_per_second * PAPER_GAIN_MM_PER_UNIT / PAPER_SPEED_MM_PER_S
    row_in = min(standard_row_in, MAX_ROW_HEIGHT_IN)
    mm_per_unit = row_in / span * PAPER_SPEED_MM_PER_S / inches_per_second  # "mm" of paper running at 25 mm/s
    box_factor = _box_factor(mm_per_unit)
    scale = (f"{PAPER_SPEED_MM_PER_S:g} mm/s, {PAPER_GAIN_MM_PER_UNIT:g} mm/{unit}" if row_in == standard_row_in
             else f"{PAPER_SPEED_MM_PER_S:g} mm/s, amplitude compressed to {mm_per_unit:.1f} mm/{unit}; "
                  f"boxes {SMALL_BOX_UNIT * box_factor:g} and {LARGE_BOX_UNIT * box_factor:g} {unit}")

    rows = len(lead_rows) + 1
    width, height = STRIP_WIDTH_IN + _LEFT_IN + _RIGHT_IN, rows * (row_in + _GAP_IN) + _TOP_IN + _BOTTOM_IN
    figure = Figure(figsize=(width, height), facecolor="white")
    grid = figure.add_gridspec(rows, 1, hspace=_GAP_IN / row_in, left=_LEFT_IN / width, right=1 - _RIGHT_IN / width,
                               top=1 - _TOP_IN / height, bottom=_BOTTOM_IN / height)
    for r, row in enumerate(lead_rows):
        ax = figure.add_subplot(grid[r])
        columns = [slice(c * quarter, (c + 1) * quarter if c < 3 else num_samples) for c in range(4)]
        shown = [(cols, lead) for cols, lead in zip(columns, row) if lead]  # a lead not recorded: blank
        segments = [ecg[cols, lead_names.index(lead)] for cols, lead in shown]
        low, high = _row_limits(segments, span)
        _paper_axes(ax, seconds, (low, high), unit, show_time=False, box_factor=box_factor)
        for (cols, lead), segment in zip(shown, segments):
            ax.plot(time[cols], segment, color=TRACE_COLOR, linewidth=0.7)
            _label(ax, time[cols.start], high, lead)
            if cols.start:
                ax.axvline(time[cols.start], ymin=0.3, ymax=0.7, color=TRACE_COLOR, linewidth=1.0)
    ax = figure.add_subplot(grid[rows - 1])
    rhythm = ecg[:, lead_names.index(rhythm_lead)]
    low, high = _row_limits([rhythm], span)
    _paper_axes(ax, seconds, (low, high), unit, show_time=True, box_factor=box_factor)
    ax.plot(time, rhythm, color=TRACE_COLOR, linewidth=0.7)
    _label(ax, 0.0, high, f"{rhythm_lead} (rhythm)")
    figure.suptitle(f"{title}    [{scale}]", fontsize=11, x=0.05, ha="left")
    return figure
