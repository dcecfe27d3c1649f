"""What the graphs take from the command lines (decoding, writing, drift limits) and the defaults.

Plain dataclasses and constants, importing neither Beam nor TensorFlow: the command lines show these
defaults in `--help` and build these settings before loading either.
"""
from __future__ import annotations

import dataclasses

from beam_pipeline.inputs.classes import ClassMap
from ecg_common.schema import DEFAULT_GEOMETRY, SAMPLING_RATE_HZ, Geometry
from ecg_decode.sandbox.protocol import DecodeLimits

DEFAULT_BATCH_SIZE = 32
"""Records per Arrow batch fed to tf.Transform (8 and 64 measured no faster: docs/performance.md)."""

DEFAULT_GZIP_LEVEL = 2
"""ISA-L level (0-3): on real ECGs 2 compresses like zlib level 6 within 11%, at 1/9 of the time."""

MEAN_SHIFT_LIMIT_STD = 1.0
"""Largest accepted |batch mean - frozen mean| per lead, in frozen standard deviations (see `drift.py`)."""

STD_RATIO_LIMIT = 4.0
"""Largest accepted batch std / frozen std per lead (and its inverse the smallest; see `drift.py`)."""


DEFAULT_MIN_CLASS_COUNT = 1
"""Without --classes, a code is a class when at least this many training records carry it."""


@dataclasses.dataclass(frozen=True)
class Labelling:
    """Where a record's classes come from, and which classes there are (multi-label runs).

    Binary runs (the default) keep the 0/1 `label`. Multi-label runs read each record's codes from
    its header's `# Dx:` line (`from_header`) or from a multi-label labels file, and map them through
    `classes`; `classes` is None only while the vocabulary is being learned (every code kept)."""

    multi_label: bool = False
    from_header: bool = False
    classes: ClassMap | None = None
    min_class_count: int = DEFAULT_MIN_CLASS_COUNT


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """What decoding and batching need to know; the same for both passes."""

    default_sampling_rate: float = SAMPLING_RATE_HZ
    pad_short: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    limits: DecodeLimits = DecodeLimits()
    reject_flagged: bool = False
    labelling: Labelling = Labelling()
    geometry: Geometry = DEFAULT_GEOMETRY
    """The example's rate, window and leads (`--target_rate_hz`, `--window_s`, `--leads`)."""
    window_stride_s: float | None = None
    """`--window_stride_s`: None keeps one window per record (its first); else every window at this stride."""


@dataclasses.dataclass(frozen=True)
class WriteOptions:
    """How the TFRecord shards are written; the same for the main command and reprocessing."""

    num_shards: int = 0
    """0: the runner decides, which keeps memory flat; a fixed count makes Beam group all examples first."""
    gzip_level: int = DEFAULT_GZIP_LEVEL


@dataclasses.dataclass(frozen=True)
class DriftLimits:
    mean_shift_std: float = MEAN_SHIFT_LIMIT_STD
    std_ratio: float = STD_RATIO_LIMIT


SCORING_BATCH_SIZE = 64
"""Examples per call of the model in nightly scoring: predict's default `--batch_size`."""


@dataclasses.dataclass(frozen=True)
class ScoringModel:
    """The exported model version that nightly scoring (`reprocess --model_dir`) applies to a batch."""

    model_dir: str
    version: int
    export_dir: str
    """`model_dir/serving/<version>/`: the SavedModel loaded once per worker."""
    class_names: tuple[str, ...] | None = None
    """A multi-label export's classes (its `assets.extra/classes.txt`, the CSV's probability columns); None: binary."""
    batch_size: int = SCORING_BATCH_SIZE


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the job is given to find its records with: each split's input directory (local or `gs://`)
    and the labels file, never the files themselves (`graph/sources.py` lists them inside the job)."""

    directories: dict[str, str]
    labels_path: str | None = None
    """None with --dx_from_header: the classes are in the headers."""
    normal_labels: tuple[str, ...] = ()
    multi_label: bool = False
    labels_in_header: bool = False
