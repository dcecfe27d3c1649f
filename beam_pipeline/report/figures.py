"""The run report's figures: each returns a matplotlib Figure, or None when the summary lacks its data."""
from __future__ import annotations

import numpy as np

from ecg_common.schema import LEAD_NAMES

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


def quality_flags(split_quality: dict) -> dict[str, dict]:
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
        flags = quality_flags(quality[split])
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
