"""The data's vocabulary, named once: signal geometry, feature keys and feature specs.

Every other module (decoding, preprocessing, pipeline wiring, the trainer) imports these names
instead of restating the literals, so changing the record length or a key happens in one place.
"""
from __future__ import annotations

import dataclasses
import math

SAMPLING_RATE_HZ = 500
"""Sampling rate every record is brought to (the contest's rate; others are resampled)."""

DURATION_S = 10
"""Length of one example in seconds; longer records are cropped, shorter ones rejected or padded."""

NUM_SAMPLES = SAMPLING_RATE_HZ * DURATION_S
"""Samples per lead in one example (5000)."""

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""The standard 12-lead order shared by the contest set, CPSC 2018 and PhysioNet/CinC."""

NUM_LEADS = len(LEAD_NAMES)

ECG_SHAPE = (NUM_SAMPLES, NUM_LEADS)
"""Time by lead: what a Keras Conv1D takes (the default geometry's shape; see `Geometry`)."""


MAX_RESULT_VALUES = 48 << 20
"""Most float32 values one decoded record may hold whole (192 MiB), when it is decoded whole to cut
windows from: one hour of 12 leads at 1000 Hz is 43 M values. A longer result (an hour-long record at
a high `--target_rate_hz`) is `too_large`. The decoder child's memory limit (`--decode_memory_mb`,
1024 MB) covers the few float64 copies decoding makes of a 30-minute 500 Hz record (43 MB as float32)."""


def canonical_lead(name: str) -> str:
    """A lead name spelled as in LEAD_NAMES when it is one of them (`AVR` -> `aVR`, `v1` -> `V1`), else stripped."""
    stripped = name.strip()
    return next((lead for lead in LEAD_NAMES if lead.lower() == stripped.lower()), stripped)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The shape of one example, as a run is built with it (`--target_rate_hz`, `--window_s`, `--leads`).

    `ecg` is float32 `[num_samples, num_leads]`: `window_s` seconds at `sampling_rate_hz`, the leads of
    `lead_names` in that order. The defaults are the contest's: 10 s, 500 Hz, the 12 standard leads.
    A run records its geometry (`run_summary.json`'s `decoding.geometry`, `layout.GEOMETRY_KEY`), so
    reprocessing and `predict --records` use the same; the trainer reads the shape from the schema.
    """

    sampling_rate_hz: float = SAMPLING_RATE_HZ
    window_s: float = DURATION_S
    lead_names: tuple[str, ...] = LEAD_NAMES

    @property
    def num_samples(self) -> int:
        return int(round(self.window_s * self.sampling_rate_hz))

    @property
    def num_leads(self) -> int:
        return len(self.lead_names)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_samples, self.num_leads)

    def problem(self) -> str | None:
        """Why this geometry cannot be built (one phrase), or None."""
        if not (math.isfinite(self.sampling_rate_hz) and self.sampling_rate_hz > 0):
            return f"sampling rate {self.sampling_rate_hz} Hz is not positive"
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            return f"window of {self.window_s} s is not positive"
        if abs(self.window_s * self.sampling_rate_hz - self.num_samples) > 1e-6 or self.num_samples < 1:
            return f"a {self.window_s:g} s window at {self.sampling_rate_hz:g} Hz is not a whole number of samples"
        if not self.lead_names or not all(self.lead_names):
            return "the lead list is empty"
        if len({lead.lower() for lead in self.lead_names}) != len(self.lead_names):
            return f"the lead list {','.join(self.lead_names)} names a lead twice"
        return None

    def to_json(self) -> dict:
        return {"sampling_rate_hz": self.sampling_rate_hz, "window_s": self.window_s,
                "num_samples": self.num_samples, "leads": list(self.lead_names)}

    @classmethod
    def from_json(cls, value: dict) -> "Geometry":
        """The inverse of `to_json` (ValueError, KeyError or TypeError for something else)."""
        geometry = cls(float(value["sampling_rate_hz"]), float(value["window_s"]),
                       tuple(str(lead) for lead in value["leads"]))
        if (problem := geometry.problem()) is not None:
            raise ValueError(problem)
        return geometry

    def describe(self) -> str:
        return f"{self.window_s:g} s at {self.sampling_rate_hz:g} Hz, leads {','.join(self.lead_names)}"


DEFAULT_GEOMETRY = Geometry()

ECG_KEY = "ecg"
LABEL_KEY = "label"
RECORD_ID_KEY = "record_id"
LABELS_KEY = "labels"
"""Multi-label runs: int64 [K] multi-hot over the classes in `OUT/classes.txt` (binary runs keep `label`)."""
WINDOW_INDEX_KEY = "window_index"
"""int64, 0-based index of the window within its record (records longer than one window)."""
WINDOW_START_KEY = "window_start_s"
"""float32, where the window starts in its record, in seconds."""
AGE_KEY = "age"
"""float32 years, absent when the record does not say."""
SEX_KEY = "sex"
"""int64, 0 female, 1 male, absent when the record does not say."""
LABEL_NAMES_KEY = "label_names"
"""Multi-label runs, raw data only: the record's class names (bytes, variable length) that the
`preprocessing_fn` turns into the `labels` multi-hot."""

UNKNOWN_LABEL = -1
"""Label value of a record whose label is not known (unlabelled TEST records).

Raw record batches carry it so every column is dense. The transform keeps only known labels and the
encoder drops the `label` feature from the other examples, so a transformed example has a `label`
only when it is known, and the transformed schema declares `label` a `VarLenFeature` (0 or 1 value).
Readers that want a dense label (the trainer, predict) parse it with this value as the default.
"""

CLASSES_KNOWN = 1
"""Multi-label runs: the raw `label` column only says whether the record's classes are known
(CLASSES_KNOWN, maybe none of them) or not (UNKNOWN_LABEL: an unlabelled test record, no `labels`)."""

NORMAL, ABNORMAL = 0, 1
VALID_LABELS = (NORMAL, ABNORMAL)
CLASS_NAMES = {NORMAL: "normal", ABNORMAL: "abnormal"}
"""How the labels are named in summaries, metrics and reports."""

TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


def raw_feature_spec(geometry: Geometry = DEFAULT_GEOMETRY, multi_label: bool = False) -> dict:
    """The raw (pre-transform) features as `tf.io` parsing specs: the single source of the raw schema.

    `geometry` gives `ecg` its shape (default [5000, 12]); `multi_label` adds the record's class names
    (LABEL_NAMES_KEY); binary runs are unchanged."""
    import tensorflow as tf  # imported lazily: decoding and label parsing must not pay for TF

    spec = {
        ECG_KEY: tf.io.FixedLenFeature(list(geometry.shape), tf.float32),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        WINDOW_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
        WINDOW_START_KEY: tf.io.FixedLenFeature([], tf.float32),
        AGE_KEY: tf.io.VarLenFeature(tf.float32),
        SEX_KEY: tf.io.VarLenFeature(tf.int64),
    }
    if multi_label:
        spec[LABEL_NAMES_KEY] = tf.io.VarLenFeature(tf.string)
    return spec
