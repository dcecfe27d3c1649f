"""Signal-quality findings on a decoded record: flags, not errors.

A lead that was unplugged (flat), an amplifier that saturated (clipping) or a noisy electrode leaves a record that
decodes fine but carries less information. Such records are kept and counted (`quality` in
`run_summary.json`, one line per flagged record in `OUT/quality/<split>.jsonl`); they are rejected
(`poor_quality`) only when the run asks for it with `--reject_flagged`.

Rules, per lead of the decoded (5000, 12) mV record (measured on the 60 real recordings: no
physiological lead has a peak-to-peak below 0.23 mV, and the exact extreme of a lead is reached in
at most one stretch of 56 samples or in five short ones of 18 samples in total):

- `flat_lead`: peak-to-peak below FLAT_PEAK_TO_PEAK_MV. Two real Chapman/Ningbo records have three
  leads that are exactly zero throughout.
- `clipped`: the lead sits exactly at its own maximum (or minimum) in at least CLIPPED_MIN_STRETCHES
  separate stretches that together hold at least CLIPPED_MIN_FRACTION of its samples. Saturation
  (at the ADC's limit, e.g. int16 +-32767 in CinC files, or an analogue front end's) cuts every
  large wave at the same value; a real signal reaches its exact extreme once or in a few samples.
  Measured at the 500 Hz output, so plateaus smoothed by resampling from another rate may go unflagged.
- `noisy`: the lead's sample-to-sample noise (a robust standard deviation of its first difference,
  1.4826 x MAD / sqrt 2, which the slow P-QRS-T waves barely move) is above NOISY_HF_NOISE_MV.
  Muscle tremor and loose electrodes add broadband noise of about 0.1 mV and more; across the 60
  real recordings the median is 5 uV, the 99th percentile 51 uV, the noisiest lead 0.10 mV.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
from typing import Iterable

import numpy as np

from ecg_common.schema import LEAD_NAMES

FLAT_LEAD = "flat_lead"
CLIPPED = "clipped"
NOISY = "noisy"
FLAGS = (FLAT_LEAD, CLIPPED, NOISY)

FLAT_PEAK_TO_PEAK_MV = 0.05
"""Below this peak-to-peak amplitude a lead records no heart: 4.6x under the smallest real lead seen."""

CLIPPED_MIN_STRETCHES = 3
CLIPPED_MIN_FRACTION = 0.01
"""At least 3 plateaus at the extreme holding at least 1% (50) of the samples: several beats cut off."""

NOISY_HF_NOISE_MV = 0.15
"""1.5x the noisiest real lead seen (0.10 mV), 5x the synthetic records' noise: only gross noise flags."""

SUMMARY_MAX_IDS = 100
"""Record ids listed per flag in `run_summary.json`; the full list is in `quality/<split>.jsonl`."""


@dataclasses.dataclass(frozen=True)
class QualityFinding:
    """One flagged record: flag -> names of the leads that raised it."""

    record_id: str
    path: str
    flags: dict[str, tuple[str, ...]]

    def to_json(self) -> str:
        return json.dumps({"record_id": self.record_id, "path": self.path,
                           "flags": {flag: list(leads) for flag, leads in self.flags.items()}}, sort_keys=True)

    def describe(self) -> str:
        """`flat_lead: V2, V4; clipped: I` (the detail of a `poor_quality` rejection)."""
        return "; ".join(f"{flag}: {', '.join(leads)}" for flag, leads in self.flags.items())


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """`np.median(rows, axis=1)` for finite data, about 10x faster (measured 0.05 vs 0.5 ms on (12, 5000)):
    np.median partitions around two positions at once, which numpy does slowly; one partition and a
    max give the same two middle values."""
    middle = rows.shape[1] // 2
    ordered = np.partition(rows, middle, axis=1)
    upper = ordered[:, middle]
    if rows.shape[1] % 2:
        return upper
    return (ordered[:, :middle].max(axis=1) + upper) / 2


def _clipped(leads: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Per lead (row): whether it sits at its own maximum or minimum in enough separate stretches."""
    clipped = np.zeros(leads.shape[0], dtype=bool)
    min_samples = CLIPPED_MIN_FRACTION * leads.shape[1]
    for extreme in (leads.max(axis=1), leads.min(axis=1)):
        at = leads == extreme[:, None]
        candidates = np.flatnonzero(at.view(np.uint8).sum(axis=1, dtype=np.int32) >= min_samples)
        if candidates.size:  # rare: a real lead reaches its exact extreme in a handful of samples
            at = at[candidates]
            stretches = np.count_nonzero(at[:, 1:] & ~at[:, :-1], axis=1) + at[:, 0]
            clipped[candidates[stretches >= CLIPPED_MIN_STRETCHES]] = True
    return clipped & ~flat


def _deviations(leads: np.ndarray) -> np.ndarray:
    """Per lead (row), the absolute deviations of its first difference from that difference's median."""
    return _step_deviations(np.diff(leads, axis=1))


def _step_deviations(steps: np.ndarray) -> np.ndarray:
    """`_deviations` of the leads whose first differences are `steps`."""
    return np.abs(steps - _row_medians(steps)[:, None])


def _noise_of_mad(mad: np.ndarray) -> np.ndarray:
    """The white-noise standard deviation (mV) that a first difference's median absolute deviation implies."""
    return 1.4826 * mad / np.sqrt(2.0)


def _noise_mv(leads: np.ndarray) -> np.ndarray:
    """Per lead (row), a robust estimate of the white-noise standard deviation (mV), from the first difference."""
    return _noise_of_mad(_row_medians(_deviations(leads)))


@functools.lru_cache(maxsize=None)
def _largest_quiet_mad(dtype: str) -> np.generic:
    """The largest median absolute deviation of this dtype whose `_noise_of_mad` is not above
    NOISY_HF_NOISE_MV: the same arithmetic, so `mad > it` is exactly `_noise_of_mad(mad) > NOISY_HF_NOISE_MV`
    (rounding is monotone, so the comparison flips at one value)."""
    kind = np.dtype(dtype).type
    noisy = lambda mad: bool(_noise_of_mad(np.array([mad], dtype=kind))[0] > NOISY_HF_NOISE_MV)  # noqa: E731
    mad = kind(NOISY_HF_NOISE_MV * np.sqrt(2.0) / 1.4826)
    while noisy(mad):
        mad = np.nextafter(mad, kind(-np.inf))
    while not noisy(up := np.nextafter(mad, kind(np.inf))):
        mad = up
    return mad


def _noisy(deviations: np.ndarray) -> np.ndarray:
    """Per row of `_deviations(leads)`: `_noise_mv(leads) > NOISY_HF_NOISE_MV`, with one partition
    instead of two. For an odd number of differences the median deviation is the middle one, above the
    threshold exactly when more than half of the deviations are: a count, where the median needs a
    partition (`assess` on a (5000, 12) record: 1.7 -> 1.2 ms). An even number (the median averages
    two) takes the median's way."""
    count = deviations.shape[1]
    if count % 2 == 0:
        return _noise_of_mad(_row_medians(deviations)) > NOISY_HF_NOISE_MV
    above = np.count_nonzero(deviations > _largest_quiet_mad(deviations.dtype.str), axis=1)
    return above >= count - count // 2


QUIET_MARGIN = 0.999
"""`_quiet_step` sits 0.1% below the bound `_surely_quiet`'s proof needs: far more than the rounding
of the threshold and of the deviations (float32: ~1e-7 relative), so the shortcut never errs."""


@functools.lru_cache(maxsize=None)
def _quiet_step(dtype: str) -> np.generic:
    """The |first difference| `_surely_quiet` counts above: just under half of `_largest_quiet_mad`."""
    return np.dtype(dtype).type(_largest_quiet_mad(dtype) / 2 * QUIET_MARGIN)


def _surely_quiet(steps: np.ndarray) -> np.ndarray:
    """Per row of first differences (an odd number n of them): True where the lead is certainly not
    `noisy`, decided by one count instead of the two medians (the first difference's median is a
    partition of every row: ~0.5 of `assess`'s ~0.65 ms a record, measured).

    With m the differences' median (the middle one), A = `_largest_quiet_mad` and u = `_quiet_step`
    (just under A / 2), suppose fewer than n - n // 2 differences have |step| > u. Then
    (1) |m| <= u: were m above u, m and the n // 2 differences above it would all be beyond u (likewise
        below -u);
    (2) a deviation |step - m| above A (what `_noisy` counts) needs |step| > A - |m| >= 2u - u = u, so
        fewer than n - n // 2 deviations are above A: the lead is not noisy, as the medians would say.
    Leads the count cannot vouch for (a noisy one, or a quiet one with many large steps) and even n
    take the medians' way; on the real and synthetic records nearly every lead is vouched for."""
    count = steps.shape[1]
    if count % 2 == 0:
        return np.zeros(steps.shape[0], dtype=bool)
    return np.count_nonzero(np.abs(steps) > _quiet_step(steps.dtype.str), axis=1) < count - count // 2


def _noisy_leads(leads: np.ndarray) -> np.ndarray:
    """Per lead (row): `_noisy(_deviations(leads))`, with the medians computed only for the leads
    `_surely_quiet` cannot vouch for."""
    steps = np.diff(leads, axis=1)
    noisy = np.zeros(leads.shape[0], dtype=bool)
    unsure = ~_surely_quiet(steps)
    if unsure.any():
        noisy[unsure] = _noisy(_step_deviations(steps[unsure]))
    return noisy


def high_frequency_noise_mv(ecg: np.ndarray) -> np.ndarray:
    """`_noise_mv` of a decoded (samples, leads) record."""
    return _noise_mv(np.ascontiguousarray(ecg.T))


def assess(ecg: np.ndarray, lead_names: tuple[str, ...] = LEAD_NAMES) -> dict[str, tuple[str, ...]]:
    """The flags raised by a decoded (samples, leads) mV record, its leads named `lead_names`; empty when none."""
    leads = np.ascontiguousarray(ecg.T)  # one row per lead: every reduction below runs on contiguous memory
    flat = leads.max(axis=1) - leads.min(axis=1) < FLAT_PEAK_TO_PEAK_MV
    flags = {FLAT_LEAD: flat, CLIPPED: _clipped(leads, flat), NOISY: _noisy_leads(leads)}
    return {flag: tuple(lead_names[k] for k in np.flatnonzero(hits)) for flag, hits in flags.items() if hits.any()}


def summarize(findings: Iterable[dict]) -> dict:
    """Per flag: records flagged, count per lead, and the first SUMMARY_MAX_IDS record ids (sorted).

    `findings` are the parsed lines of `quality/<split>.jsonl`.
    """
    records: dict[str, list[str]] = {flag: [] for flag in FLAGS}
    by_lead: dict[str, collections.Counter] = {flag: collections.Counter() for flag in FLAGS}
    flagged = 0
    for finding in findings:
        flagged += 1
        for flag, leads in finding["flags"].items():
            records.setdefault(flag, []).append(finding["record_id"])
            by_lead.setdefault(flag, collections.Counter()).update(leads)
    summary: dict = {"records_flagged": flagged}
    for flag in records:
        ids = sorted(records[flag])
        summary[flag] = {"records": len(ids),
                         "by_lead": {lead: by_lead[flag][lead] for lead in _lead_order(by_lead[flag])
                                     if by_lead[flag][lead]},
                         "record_ids": ids[:SUMMARY_MAX_IDS], "record_ids_truncated": len(ids) > SUMMARY_MAX_IDS}
    return summary



def _lead_order(counts: collections.Counter) -> list[str]:
    """The standard leads in their order, then any other lead a run was built with (`--leads`)."""
    return [*LEAD_NAMES, *sorted(set(counts) - set(LEAD_NAMES))]
