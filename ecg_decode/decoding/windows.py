"""Cutting a whole standardized record into the windows that become examples (`--window_stride_s`).

A record of D seconds yields floor((D - S) / T) + 1 windows of S seconds starting at 0, T, 2T, ...
(S = `--window_s`, T = `--window_stride_s`), in samples: window k is rows
[k * stride, k * stride + window) of the (samples, leads) record at the target rate. The tail that
does not fill a window is dropped. Without a stride a record gives one window, its first.

The windows are views into the decoded record (no copy): the record is decoded once, whole, by the
child, and cut here in the parent, where the Arrow batch concatenation copies each window once.
"""
from __future__ import annotations

import math
import typing

import numpy as np

from ecg_common.schema import Geometry


class Window(typing.NamedTuple):
    index: int
    start_s: float
    ecg: np.ndarray


def stride_samples(geometry: Geometry, stride_s: float) -> int:
    """The stride in samples at the geometry's rate."""
    return int(round(stride_s * geometry.sampling_rate_hz))


def stride_problem(geometry: Geometry, stride_s: float | None) -> str | None:
    """Why `stride_s` cannot cut windows of `geometry` (one phrase), or None."""
    if stride_s is None:
        return None
    if not (math.isfinite(stride_s) and stride_s > 0):
        return f"a stride of {stride_s} s is not positive"
    samples = stride_s * geometry.sampling_rate_hz
    if abs(samples - round(samples)) > 1e-6 or round(samples) < 1:
        return f"a {stride_s:g} s stride at {geometry.sampling_rate_hz:g} Hz is not a whole number of samples"
    return None


def window_count(num_samples: int, window: int, stride: int) -> int:
    """floor((num_samples - window) / stride) + 1, and 0 when the record is shorter than one window."""
    return 0 if num_samples < window else (num_samples - window) // stride + 1


def cut_windows(ecg: np.ndarray, geometry: Geometry, stride_s: float | None) -> list[Window]:
    """The windows of a whole (samples, leads) record: views of `geometry.num_samples` rows each."""
    window = geometry.num_samples
    if stride_s is None:
        return [Window(0, 0.0, ecg[:window])] if len(ecg) >= window else []
    stride = stride_samples(geometry, stride_s)
    return [Window(k, k * stride / geometry.sampling_rate_hz, ecg[k * stride:k * stride + window])
            for k in range(window_count(len(ecg), window, stride))]
