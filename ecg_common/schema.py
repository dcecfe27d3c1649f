"""The data's vocabulary, named once: signal geometry, feature keys and feature specs.

Every other module (decoding, preprocessing, pipeline wiring, the trainer) imports these names
instead of restating the literals, so changing the record length or a key happens in one place.
"""
from __future__ import annotations

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
"""Time by lead: what a Keras Conv1D takes."""

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


def raw_feature_spec(multi_label: bool = False) -> dict:
    """The raw (pre-transform) features as `tf.io` parsing specs: the single source of the raw schema.

    `multi_label` adds the record's class names (LABEL_NAMES_KEY); binary runs are unchanged."""
    import tensorflow as tf  # imported lazily: decoding and label parsing must not pay for TF

    spec = {
        ECG_KEY: tf.io.FixedLenFeature(list(ECG_SHAPE), tf.float32),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        RECORD_ID_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    if multi_label:
        spec[LABEL_NAMES_KEY] = tf.io.VarLenFeature(tf.string)
    return spec
