"""End to end at scale: the pipeline, then the trainer on its output, per size, in one invocation.

For each size: generate N distinct synthetic TRAIN records once (cached under --data_root, kept), run
`python -m beam_pipeline` (train dir + labels) and then `python -m trainer` on its output for --epochs,
each as a child process measured by bench/process_tree.py (wall time, peak memory of the whole process
tree, workers and decoder children included), and the disk used by the input, by the pipeline's output
and by the model directory. One table row per size, with the peak memory of each command against its
value at the smallest size (the target: within 1.2x from 5,000 to 50,000 records), whether the trainer
held its examples in memory (`cached_in_memory` of metrics.json) and the load average when the size
started (the machine may be shared). The scratch outputs are removed after measuring unless --keep.
--stream runs the trainer with a cache budget of 0, so it streams from the shards at every size: its
memory at a size that would be cached, against a size that is not, shows whether streaming is bounded.

    python bench/end_to_end.py --sizes 5000 50000 [--epochs 1] [--data_root DIR] [--work_dir DIR] [--keep] [--stream]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile

from process_tree import Run, measure  # bench/ is on sys.path when a script in it runs

from beam_pipeline.synthetic.generator import generate_dataset
from trainer.layout import METRICS_FILE

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
MB = 2**20
_STREAMING_TRAINER = ("import sys; from trainer import inputs; inputs.cache_budget_bytes = lambda: 0; "
                      "from trainer.__main__ import main; sys.exit(main(sys.argv[1:]))")
"""`python -m trainer` with no memory for the example cache (`trainer.inputs.fits_in_memory` then refuses it)."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One size's figures: both commands' runs, disk used (MB) and what the trainer decided."""

    size: int
    load: float
    pipeline: Run
    trainer: Run
    input_mb: float
    output_mb: float
    model_mb: float
    cached: bool


def _dataset(data_root: str, size: int) -> str:
    """The N-record TRAIN set (seeded by N, as bench/benchmark.py does), generated on first use only."""
    root = os.path.join(data_root, f"train-{size}")
    generate_dataset(root, n_train=size, n_test=0, seed=size)
    return root


def disk_mb(path: str) -> float:
    """Disk blocks allocated under `path` (what `du` counts, not the apparent sizes), in MB."""
    used = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                used += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return used / MB


def _trainer_cached(model_dir: str) -> bool:
    with open(os.path.join(model_dir, METRICS_FILE)) as handle:
        return bool(json.load(handle)["cached_in_memory"])


def _trainer_command(stream: bool) -> list[str]:
    return [sys.executable, "-c", _STREAMING_TRAINER] if stream else [sys.executable, "-m", "trainer"]


def run_size(size: int, data_root: str, work_dir: str, epochs: int, keep: bool, stream: bool = False) -> Row:
    """Generates (once) and measures one size; the scratch folder is removed unless `keep`."""
    root = _dataset(data_root, size)
    load = os.getloadavg()[0]
    scratch = tempfile.mkdtemp(prefix=f"ecg-e2e-{size}-", dir=work_dir)
    out, model = os.path.join(scratch, "out"), os.path.join(scratch, "model")
    try:
        pipeline = measure([sys.executable, "-m", "beam_pipeline", "--train_dir", os.path.join(root, "TRAIN"),
                            "--labels", os.path.join(root, "reference.txt"), "--output_dir", out], cwd=REPO)
        trainer = measure([*_trainer_command(stream), "--data_dir", out, "--model_dir", model,
                           "--epochs", str(epochs)], cwd=REPO)
        return Row(size, load, pipeline, trainer, disk_mb(root), disk_mb(out), disk_mb(model), _trainer_cached(model))
    finally:
        if keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _ratio(value: float, smallest: float) -> str:
    return f"{value / smallest:5.2f}x"


def print_table(rows: list[Row], epochs: int) -> None:
    """The figures so far, smallest size first: the baseline of the memory ratios."""
    rows = sorted(rows, key=lambda row: row.size)
    first = rows[0]
    print(f"\ntrainer epochs: {epochs}; cores: {os.cpu_count()}; peak MB of the whole process tree; disk in MB")
    print(f"{'records':>8} {'load':>5} | {'pipeline s':>10} {'rec/s':>6} {'MB':>6} {'MB x':>6} "
          f"| {'trainer s':>9} {'MB':>6} {'MB x':>6} {'cached':>6} | {'input MB':>9} {'output MB':>9} {'model MB':>8}")
    for row in rows:
        print(f"{row.size:8d} {row.load:5.2f} | {row.pipeline.wall_s:10.1f} {row.size / row.pipeline.wall_s:6.1f} "
              f"{row.pipeline.peak_mb:6.0f} {_ratio(row.pipeline.peak_mb, first.pipeline.peak_mb)} "
              f"| {row.trainer.wall_s:9.1f} {row.trainer.peak_mb:6.0f} {_ratio(row.trainer.peak_mb, first.trainer.peak_mb)} "
              f"{'yes' if row.cached else 'no':>6} | {row.input_mb:9.0f} {row.output_mb:9.0f} {row.model_mb:8.1f}")
    print("MB x: peak memory / its value at the smallest size; cached: the trainer held the examples in memory "
          "(else it streamed them from the shards); load: 1-minute load average when the size started")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--epochs", type=int, default=1, help="trainer epochs (default 1)")
    parser.add_argument("--data_root", default=os.path.join(REPO, "bench_data"),
                        help="where the generated inputs are cached (kept); ~240 KB a record")
    parser.add_argument("--work_dir", default=tempfile.gettempdir(),
                        help="where the pipeline's output and the model are written while measured")
    parser.add_argument("--keep", action="store_true", help="keep the pipeline output and the model")
    parser.add_argument("--stream", action="store_true", help="the trainer streams from the shards at every size")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    rows = []
    for size in sorted(args.sizes):
        rows.append(run_size(size, args.data_root, args.work_dir, args.epochs, args.keep, args.stream))
        print_table(rows, args.epochs)


if __name__ == "__main__":
    main()
