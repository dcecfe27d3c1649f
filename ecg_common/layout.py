"""The names of the output directory's layout, in one place: what the pipeline writes and what the
trainer, the report and reprocessing read.

    OUT/<split>/part-SSSSS-of-NNNNN.tfrecord.gz   transformed examples (GZIP)
    OUT/transform_fn/, OUT/transformed_metadata/  the tf.Transform graph (names owned by tf.Transform)
    OUT/metadata/                                 the raw schema (RAW_METADATA_DIR)
    OUT/errors/<split>.jsonl, errors/labels.jsonl rejected records and labels-file findings
    OUT/quality/<split>.jsonl                     signal-quality flags
    OUT/report/index.html                         the run report
    OUT/run_summary.json                          counts, statistics, cost
    OUT/_SUCCESS                                  written last: the output is complete
    OUT/_ECG_PIPELINE_OUTPUT                      written first: this folder is an output of this project

Reprocessing publishes batches with the same per-split layout, for one split:

    ROOT/batch-<UTC time>/data/part-*.tfrecord.gz, run_summary.json, _SUCCESS
"""
from __future__ import annotations

SHARD_PREFIX = "part"
TFRECORD_SUFFIX = ".tfrecord.gz"
"""Output shards are `<split>/part-SSSSS-of-NNNNN.tfrecord.gz` (GZIP)."""
BATCH_PREFIX = "batch-"
BATCH_SPLIT = "data"
"""A reprocessed batch is `ROOT/batch-<UTC time>/` holding the single split `data` (the trainer reads them too)."""

RAW_METADATA_DIR = "metadata"
ERRORS_DIR = "errors"
QUALITY_DIR = "quality"
REPORT_DIR = "report"
SUMMARY_FILE = "run_summary.json"
SUMMARY_DECODING_KEY = "decoding"
"""`run_summary.json`'s `decoding`: the options every record was decoded with, so whoever decodes a raw
recording later (the trainer's `predict --records`) decodes it the same way."""
DEFAULT_SAMPLING_RATE_KEY = "default_sampling_rate_hz"
"""The rate (Hz) assumed for a record without a WFDB `.hea` header (`--sampling_rate`)."""
PAD_SHORT_KEY = "pad_short"
"""Whether records shorter than 10 s were zero-padded (`--pad_short`) rather than rejected."""
GEOMETRY_KEY = "geometry"
"""The example geometry the run was built with (`schema.Geometry.to_json()`: rate, window, leads); an
output without it was built with the default geometry. Reprocessing refuses other geometry."""
WINDOW_STRIDE_KEY = "window_stride_s"
"""The stride between windows (`--window_stride_s`), null for one window per record."""
CLASSES_FILE = "classes.txt"
"""Multi-label runs: `OUT/classes.txt`, one class name per line, in the order of the `labels` multi-hot."""
CLASS_CODES_FILE = "class_codes.tsv"
"""Multi-label runs: `OUT/class_codes.tsv`, the code -> class mapping applied (the `--classes` format:
name, a tab, its codes), so reprocessing maps a batch's codes as training did."""
CLASS_VOCABULARY = "classes"
"""The name of the tf.Transform vocabulary of the classes learned over the training split."""
SUMMARY_CLASSES_KEY = "classes"
"""`run_summary.json`'s `classes`: the class names, training records per class, the codes ignored."""
SUCCESS_MARKER = "_SUCCESS"
OUTPUT_MARKER = "_ECG_PIPELINE_OUTPUT"
"""A small JSON file naming the project and what the folder is; only a folder holding it (or the layout
of an older version) is ever replaced or removed by a run (beam_pipeline/runs/output_guard.py)."""
LABELS_FINDINGS = "labels"
"""`errors/labels.jsonl`: the labels file's unusable lines and its ids without a `.mat` file."""
