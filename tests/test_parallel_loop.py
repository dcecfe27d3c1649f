"""The multiprocessing peer of the benchmark writes what the single-process loop writes (same examples,
same statistics), in one shard per worker: the comparison is fair only if both do the same work."""
import glob
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from beam_pipeline.synthetic.generator import generate_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples(files: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        out[feature["record_id"].bytes_list.value[0].decode()] = np.array(feature["ecg"].float_list.value)
    return out


def test_the_parallel_peer_writes_the_loops_examples_in_one_shard_per_worker(tmp_path):
    generate_dataset(str(tmp_path / "data"), n_train=10, n_test=0, seed=1)
    train = str(tmp_path / "data" / "TRAIN")
    subprocess.run([sys.executable, os.path.join(REPO, "bench", "baseline_loop.py"), train,
                    str(tmp_path / "loop.tfrecord.gz")], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, os.path.join(REPO, "bench", "parallel_loop.py"), train, str(tmp_path / "peer"),
                    "--workers", "3"], check=True, capture_output=True, timeout=300)
    shards = sorted(glob.glob(str(tmp_path / "peer" / "part-*.tfrecord.gz")))
    assert len(shards) == 3
    loop, peer = _examples([str(tmp_path / "loop.tfrecord.gz")]), _examples(shards)
    assert sorted(loop) == sorted(peer) and len(loop) == 10
    for record_id, values in loop.items():
        np.testing.assert_allclose(peer[record_id], values, atol=1e-5)
