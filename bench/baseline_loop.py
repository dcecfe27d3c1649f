"""The hand-written loop a user would otherwise write (the contest tutorials' approach): the baseline.

Pass 1: `scipy.io.loadmat` per file, per-lead sums in numpy (float64) -> 12 means and stds.
Pass 2: load each file again, normalize, one `tf.train.Example` per record, GZIP `TFRecordWriter`.
Single process, no Beam, no tf.Transform. Usage: python bench/baseline_loop.py TRAIN_DIR OUT_FILE
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np
import scipy.io
import tensorflow as tf


def _load(path: str) -> np.ndarray:
    return scipy.io.loadmat(path)["data"].astype(np.float32)


def convert(train_dir: str, out_file: str) -> int:
    paths = sorted(glob.glob(os.path.join(train_dir, "**", "*.mat"), recursive=True))
    total = total_sq = 0.0
    count = 0
    for path in paths:
        ecg = _load(path).astype(np.float64)
        total = total + ecg.sum(axis=0)
        total_sq = total_sq + (ecg ** 2).sum(axis=0)
        count += ecg.shape[0]
    mean = total / count
    std = np.sqrt(total_sq / count - mean ** 2)
    return write_examples(paths, out_file, mean, std)


def write_examples(paths: list[str], out_file: str, mean: np.ndarray, std: np.ndarray) -> int:
    """Pass 2: each file normalized with (mean, std), one `tf.train.Example` per record, one GZIP file
    (also the parallel peer's shard writer, so both loops do the same work)."""
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(out_file, options) as writer:
        for path in paths:
            ecg = ((_load(path) - mean) / std).astype(np.float32)
            record_id = os.path.splitext(os.path.basename(path))[0]
            example = tf.train.Example(features=tf.train.Features(feature={
                "ecg": tf.train.Feature(float_list=tf.train.FloatList(value=ecg.reshape(-1))),
                "record_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record_id.encode()])),
            }))
            writer.write(example.SerializeToString())
    return len(paths)


if __name__ == "__main__":
    print(f"converted {convert(sys.argv[1], sys.argv[2])} records")
