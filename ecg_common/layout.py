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
"""
from __future__ import annotations

SHARD_PREFIX = "part"
TFRECORD_SUFFIX = ".tfrecord.gz"
"""Output shards are `<split>/part-SSSSS-of-NNNNN.tfrecord.gz` (GZIP)."""

RAW_METADATA_DIR = "metadata"
ERRORS_DIR = "errors"
QUALITY_DIR = "quality"
REPORT_DIR = "report"
SUMMARY_FILE = "run_summary.json"
SUCCESS_MARKER = "_SUCCESS"
OUTPUT_MARKER = "_ECG_PIPELINE_OUTPUT"
"""A small JSON file naming the project and what the folder is; only a folder holding it (or the layout
of an older version) is ever replaced or removed by a run (beam_pipeline/runs/output_guard.py)."""
LABELS_FINDINGS = "labels"
"""`errors/labels.jsonl`: the labels file's unusable lines and its ids without a `.mat` file."""
