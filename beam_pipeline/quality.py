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
import json
from typing import Iterable

import numpy as np

from beam_pipeline.schema import LEAD_NAMES

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


def _stretches_at(lead: np.ndarray, value: np.float32) -> tuple[int, int]:
    """(number of separate runs, number of samples) where `lead` equals `value` exactly."""
    at = lead == value
    starts = np.count_nonzero(at[1:] & ~at[:-1]) + int(at[0])
    return starts, int(np.count_nonzero(at))


def _is_clipped(lead: np.ndarray) -> bool:
    min_samples = CLIPPED_MIN_FRACTION * lead.shape[0]
    for extreme in (lead.max(), lead.min()):
        stretches, samples = _stretches_at(lead, extreme)
        if stretches >= CLIPPED_MIN_STRETCHES and samples >= min_samples:
            return True
    return False


def high_frequency_noise_mv(ecg: np.ndarray) -> np.ndarray:
    """Per lead, a robust estimate of the white-noise standard deviation (mV), from the first difference."""
    step = np.diff(ecg, axis=0)
    mad = np.median(np.abs(step - np.median(step, axis=0)), axis=0)
    return 1.4826 * mad / np.sqrt(2.0)


def assess(ecg: np.ndarray) -> dict[str, tuple[str, ...]]:
    """The flags raised by a decoded (samples, leads) mV record; empty when none."""
    peak_to_peak = np.ptp(ecg, axis=0)
    flat = peak_to_peak < FLAT_PEAK_TO_PEAK_MV
    clipped = [not flat[k] and _is_clipped(ecg[:, k]) for k in range(ecg.shape[1])]
    noisy = high_frequency_noise_mv(ecg) > NOISY_HF_NOISE_MV
    flags = {FLAT_LEAD: tuple(LEAD_NAMES[k] for k in np.flatnonzero(flat)),
             CLIPPED: tuple(LEAD_NAMES[k] for k, hit in enumerate(clipped) if hit),
             NOISY: tuple(LEAD_NAMES[k] for k in np.flatnonzero(noisy))}
    return {flag: leads for flag, leads in flags.items() if leads}


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
                         "by_lead": {lead: by_lead[flag][lead] for lead in LEAD_NAMES if by_lead[flag][lead]},
                         "record_ids": ids[:SUMMARY_MAX_IDS], "record_ids_truncated": len(ids) > SUMMARY_MAX_IDS}
    return summary

