"""The loop a competent engineer writes when one core is not enough: the baseline's two passes spread
over every core with `multiprocessing` (the fair peer of the pipeline on one machine).

Pass 1: each worker loads its share of the files (`scipy.io.loadmat`) and returns per-lead partial
sums (float64); the parent merges them into 12 means and stds.
Pass 2: each worker normalizes its share and writes one GZIP shard with TensorFlow's `TFRecordWriter`.
No Beam, no tf.Transform, no isolation of the parsers. The parent never imports TensorFlow, so the
fork of the workers stays safe. Usage: python bench/parallel_loop.py TRAIN_DIR OUT_DIR [--workers N]
"""
from __future__ import annotations

import argparse
import glob
import multiprocessing
import os

import numpy as np
import scipy.io


def _load(path: str) -> np.ndarray:
    return scipy.io.loadmat(path)["data"].astype(np.float32)


def _partial_sums(paths: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    total = np.zeros(12)
    total_sq = np.zeros(12)
    count = 0
    for path in paths:
        ecg = _load(path).astype(np.float64)
        total += ecg.sum(axis=0)
        total_sq += (ecg ** 2).sum(axis=0)
        count += ecg.shape[0]
    return total, total_sq, count


def _write_shard(task: tuple[list[str], str, np.ndarray, np.ndarray]) -> int:
    from baseline_loop import write_examples  # imports TensorFlow: in the worker only, after the fork

    paths, out_file, mean, std = task
    return write_examples(paths, out_file, mean, std)


def convert(train_dir: str, out_dir: str, workers: int) -> int:
    paths = sorted(glob.glob(os.path.join(train_dir, "**", "*.mat"), recursive=True))
    shares = [paths[i::workers] for i in range(workers)]
    os.makedirs(out_dir, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        sums = pool.map(_partial_sums, shares)
        total = sum(s[0] for s in sums)
        total_sq = sum(s[1] for s in sums)
        count = sum(s[2] for s in sums)
        mean = total / count
        std = np.sqrt(total_sq / count - mean ** 2)
        tasks = [(share, os.path.join(out_dir, f"part-{i:05d}-of-{workers:05d}.tfrecord.gz"), mean, std)
                 for i, share in enumerate(shares)]
        return sum(pool.map(_write_shard, tasks))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"converted {convert(args.train_dir, args.out_dir, args.workers)} records")
