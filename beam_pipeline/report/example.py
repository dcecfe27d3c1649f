"""The record the report draws: which one, decoded through the sandbox as the job decoded it (at the
run's geometry: rate, window and leads, from run_summary's `decoding.geometry`), and its two figures
(as decoded, and through the saved transform graph)."""
from __future__ import annotations

import dataclasses

import numpy as np

from beam_pipeline.inputs.decoder_requests import decode_in_sandbox
from beam_pipeline.inputs.discovery import RecordSource
from beam_pipeline.report.figures import NORMALIZED_UNIT
from ecg_common.layout import GEOMETRY_KEY, SUMMARY_DECODING_KEY
from ecg_common.schema import DEFAULT_GEOMETRY, SAMPLING_RATE_HZ, Geometry


@dataclasses.dataclass(frozen=True)
class Example:
    """The record drawn before and after normalization, and how it was decoded (to redraw it later)."""

    record_id: str
    path: str
    header_path: str | None = None
    default_sampling_rate: float = SAMPLING_RATE_HZ
    pad_short: bool = False
    input_root: str | None = None


def choose_example(written: list[RecordSource], flagged: set[str], default_sampling_rate: float,
                   pad_short: bool) -> Example | None:
    """The first written record without a quality flag, else the first written one; None when none was written."""
    if not written:
        return None
    source = next((s for s in written if s.path not in flagged), written[0])
    return Example(source.record_id, source.path, source.header_path, default_sampling_rate, pad_short,
                   source.input_root)


def run_geometry(summary: dict) -> Geometry:
    """The geometry a run built its examples with (`decoding.geometry` of its summary); the default for
    a summary written before geometry was recorded. ValueError when it is recorded but unreadable."""
    recorded = (summary.get(SUMMARY_DECODING_KEY) or {}).get(GEOMETRY_KEY)
    if recorded is None:
        return DEFAULT_GEOMETRY
    try:
        return Geometry.from_json(recorded)
    except (KeyError, TypeError) as error:
        raise ValueError(f"the run's geometry cannot be read: {error!r}") from None


def decode_example(example: Example, geometry: Geometry = DEFAULT_GEOMETRY) -> np.ndarray:
    """The example's (samples, leads) mV signal, decoded exactly as the pipeline decoded it (at
    `geometry`, its first window): read within the same limits and parsed in a sandboxed decoder
    child, never in this process."""
    source = RecordSource(example.path, example.record_id, split="", header_path=example.header_path,
                          input_root=example.input_root)
    result = decode_in_sandbox(source, default_sampling_rate=example.default_sampling_rate,
                               pad_short=example.pad_short, geometry=geometry)
    if not isinstance(result, np.ndarray):
        raise ValueError(f"example {example.path} no longer decodes: {result.reason}: {result.detail}")
    return result


def example_figures(transform_dir: str, example: Example,
                    geometry: Geometry = DEFAULT_GEOMETRY) -> tuple[object, object]:
    """The example record as decoded (mV) and as normalized by the saved transform graph (SD), at the
    run's `geometry` (the graph takes nothing else)."""
    from beam_pipeline.graph.statistics import transform_ecgs  # TensorFlow: only when an example is drawn
    from beam_pipeline.report.ecg_plot import twelve_lead_figure

    raw = decode_example(example, geometry)
    normalized = transform_ecgs(transform_dir, raw[None])[0]
    name = example.record_id.replace("$", r"\$")  # a plain title, not matplotlib math
    shape = {"sampling_rate_hz": geometry.sampling_rate_hz, "lead_names": geometry.lead_names}
    return (twelve_lead_figure(raw, f"{name}: as decoded (mV)", **shape),
            twelve_lead_figure(normalized, f"{name}: normalized, (x - mean) / std per lead", unit=NORMALIZED_UNIT,
                               **shape))
