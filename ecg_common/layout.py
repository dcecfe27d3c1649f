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
SUCCESS_MARKER = "_SUCCESS"
LABELS_FINDINGS = "labels"
"""`errors/labels.jsonl`: the labels file's unusable lines and its ids without a `.mat` file."""
