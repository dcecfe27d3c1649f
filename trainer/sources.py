"""Which folders of examples a training run reads: the main output's train split, plus the published
batches under each `--extra_data ROOT` that were normalized with the main output's transform.

A batch (`ROOT/batch-<UTC time>/`, written by `python -m beam_pipeline.reprocess`) is taken when
- it is published: `_SUCCESS` is there (a folder without it is a run that did not finish);
- its `run_summary.json` records the lead statistics it was normalized with (`lead_statistics`:
  the 12 means and standard deviations, read from the applied transform when the batch was made),
  and they are exactly those of the main output's `run_summary.json`. This is the transform's
  fingerprint (`ecg_common/transform_fingerprint.py`, which reprocessing and scoring check too): the same transform always gives the same numbers (they are read back from its graph,
  see `beam_pipeline/graph/statistics.py`), while statistics fitted on other records do not agree to
  the last bit. It is recorded at batch time, so it still tells the truth after the
  folder that `transform_dir` names was moved, deleted or overwritten by a newer main run;
- it holds TFRecord shards.
Any other batch is refused, with a one-line reason (logged, and listed in metrics.json). Whether a
batch carries labels is known only from its examples: the training set (`inputs.combine`) uses the
labelled ones and counts the others.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow as tf

from ecg_common.layout import BATCH_PREFIX, BATCH_SPLIT, SUCCESS_MARKER, SUMMARY_FILE
from ecg_common.rejections import ConfigurationError
from ecg_common.schema import TRAIN_SPLIT
from ecg_common.transform_fingerprint import LEAD_STATISTICS_KEY, same_transform  # noqa: F401 (shared, re-exported)
from trainer import inputs
from trainer.inputs import Source

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A batch left out of training and why: a value, not an error, so one bad night cannot stop retraining."""

    path: str
    reason: str

    def line(self) -> str:
        return f"{self.path}: not used: {self.reason}"


def main_source(data_dir: str) -> Source:
    return Source(data_dir, tuple(inputs.split_files(data_dir, TRAIN_SPLIT)), is_main=True)


def read_summary(folder: str) -> dict | None:
    """A folder's `run_summary.json`, None when it is missing or unreadable."""
    path = os.path.join(folder, SUMMARY_FILE)
    try:
        with tf.io.gfile.GFile(path) as handle:
            summary = json.loads(handle.read())
    except (tf.errors.NotFoundError, OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def lead_statistics(folder: str) -> dict | None:
    """The `lead_statistics` a folder's run summary records (None when it records none)."""
    summary = read_summary(folder)
    statistics = summary.get(LEAD_STATISTICS_KEY) if summary else None
    return statistics if isinstance(statistics, dict) else None


def batch_folders(root: str) -> list[str]:
    """Every `batch-*` folder directly under `root`, oldest first (the names sort by UTC time)."""
    names = [name for name in tf.io.gfile.listdir(root) if name.rstrip("/").startswith(BATCH_PREFIX)]
    return [os.path.join(root, name.rstrip("/")) for name in sorted(names)
            if tf.io.gfile.isdir(os.path.join(root, name.rstrip("/")))]


def check_batch(batch: str, expected: dict | None) -> Source | Refusal:
    """The batch as a Source, or why it cannot be trained on with the main output's transform."""
    if not tf.io.gfile.exists(os.path.join(batch, SUCCESS_MARKER)):
        return Refusal(batch, f"not published (no {SUCCESS_MARKER}: its run did not finish)")
    statistics = lead_statistics(batch)
    if statistics is None:
        return Refusal(batch, f"its {SUMMARY_FILE} records no {LEAD_STATISTICS_KEY}, so its transform is unknown")
    if not same_transform(statistics, expected):
        summary = read_summary(batch) or {}
        return Refusal(batch, "normalized with another transform than the main output's (its lead statistics "
                              f"differ; it was built from transform_dir {summary.get('transform_dir', '?')})")
    files = inputs.shard_files(batch, BATCH_SPLIT)
    if not files:
        return Refusal(batch, f"no TFRecord shards in {BATCH_SPLIT}/")
    return Source(batch, tuple(files))


def extra_sources(roots: list[str], data_dir: str) -> tuple[list[Source], list[Refusal]]:
    """The batches under `roots` to train on with the main output `data_dir`, oldest first, and the refused ones.

    A root that is not a folder is a configuration error; a root without batches is only logged.
    """
    if not roots:
        return [], []
    expected = lead_statistics(data_dir)
    if expected is None:
        raise ConfigurationError(f"{data_dir} has no {SUMMARY_FILE} with {LEAD_STATISTICS_KEY}: without them no "
                                 "batch can be checked against its transform, so --extra_data cannot be used")
    batches = []
    for root in roots:
        if not tf.io.gfile.isdir(root):
            raise ConfigurationError(f"--extra_data {root} is not a folder")
        found = batch_folders(root)
        if not found:
            _log.warning("--extra_data %s holds no %s* folder", root, BATCH_PREFIX)
        batches.extend(found)
    accepted, refused = [], []
    # Across roots too, in the order they were made: a newer batch's version of a record wins (inputs.combine).
    for batch in sorted(set(batches), key=lambda path: (os.path.basename(path), path)):
        checked = check_batch(batch, expected)
        (accepted if isinstance(checked, Source) else refused).append(checked)
    for refusal in refused:
        _log.warning("%s", refusal.line())
    return accepted, refused
