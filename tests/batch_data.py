"""Small synthetic recordings for the reprocessing and scale-out tests, and the base run they start from."""
from __future__ import annotations

import os
import time

import numpy as np
import scipy.io

from beam_pipeline.cli.main_command import main as pipeline_main
from ecg_common.cli import EXIT_OK
from ecg_common.schema import ECG_SHAPE, NUM_LEADS

LEAD_MEAN = np.linspace(-1.0, 2.0, NUM_LEADS)
LEAD_STD = np.linspace(0.2, 1.5, NUM_LEADS)
HOUR = 3600


def ecg(rng: np.random.Generator, shift_std: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(5000, 12) mV around the training distribution; `shift_std` moves every lead's mean by that many stds."""
    return ((rng.normal(size=ECG_SHAPE) * LEAD_STD + LEAD_MEAN + shift_std * LEAD_STD) * scale).astype(np.float32)


def save_record(folder, record_id: str, content, age_s: float = HOUR) -> None:
    """A contest-layout `.mat` (or raw bytes) whose modification time is `age_s` in the past."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record_id}.mat"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        scipy.io.savemat(path, {"data": content})
    mtime = time.time() - age_s
    os.utime(path, (mtime, mtime))


def write_training_set(folder, rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """`folder/TRAIN/*.mat` and `folder/labels.txt`; returns the raw signals by record id."""
    train = {f"T{i:03d}": ecg(rng) for i in range(count)}
    for record_id, signal in train.items():
        save_record(folder / "TRAIN", record_id, signal)
    (folder / "labels.txt").write_text("".join(f"{rid}\t{i % 2}\n" for i, rid in enumerate(train)))
    return train


def lead_moments(signals) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead mean and std over all samples of all signals, in float64: what the transform must hold."""
    values = np.stack(list(signals)).astype(np.float64).reshape(-1, NUM_LEADS)
    return values.mean(axis=0), values.std(axis=0)


def run_base(folder, rng: np.random.Generator, count: int = 10, beam_args: tuple[str, ...] = ()):
    """An earlier pipeline run (the deployed model's statistics): (output dir, raw means, raw stds)."""
    train = write_training_set(folder, rng, count)
    out = folder / "out"
    assert pipeline_main(["--train_dir", str(folder / "TRAIN"), "--labels", str(folder / "labels.txt"),
                          "--output_dir", str(out), *beam_args]) == EXIT_OK
    return (out, *lead_moments(train.values()))
