"""Pipeline vs. the hand-written loops, on the same generated data, in one invocation.

For each size: generate N synthetic TRAIN records once (cached under --data_root), run the baseline
loop (bench/baseline_loop.py, one process), its multiprocessing peer (bench/parallel_loop.py, every
core) and the pipeline with its default options, each as a child process, and print wall time, peak
memory of the whole process tree (sampled every 0.1 s, workers included), records/s, cores busy (CPU
seconds of the tree / wall seconds; for the pipeline also of its Beam job alone) and the ratios
pipeline / loop and pipeline / parallel peer. Extra arguments after `--` go to the pipeline.

    python bench/benchmark.py --sizes 1000 5000 [--skip_baseline] [-- --direct_running_mode=...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from process_tree import Run, measure  # bench/ is on sys.path when a script in it runs

from beam_pipeline.synthetic.generator import generate_dataset

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)


def _dataset(data_root: str, size: int) -> str:
    root = os.path.join(data_root, f"train-{size}")
    generate_dataset(root, n_train=size, n_test=0, seed=size)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--data_root", default=os.path.join(REPO, "bench_data"))
    parser.add_argument("--skip_baseline", action="store_true")
    args, pipeline_args = parser.parse_known_args()
    pipeline_args = [a for a in pipeline_args if a != "--"]
    rows = []
    for size in args.sizes:
        root = _dataset(args.data_root, size)
        scratch = tempfile.mkdtemp(prefix="ecg-bench-")
        try:
            loop = None if args.skip_baseline else measure(
                [sys.executable, os.path.join(BENCH_DIR, "baseline_loop.py"), os.path.join(root, "TRAIN"),
                 os.path.join(scratch, "loop.tfrecord.gz")], cwd=REPO)
            peer = None if args.skip_baseline else measure(
                [sys.executable, os.path.join(BENCH_DIR, "parallel_loop.py"), os.path.join(root, "TRAIN"),
                 os.path.join(scratch, "parallel")], cwd=REPO)
            beam_run = measure([sys.executable, "-m", "beam_pipeline", "--train_dir", os.path.join(root, "TRAIN"),
                                "--labels", os.path.join(root, "reference.txt"),
                                "--output_dir", os.path.join(scratch, "out"), *pipeline_args], cwd=REPO)
            with open(os.path.join(scratch, "out", "run_summary.json")) as handle:
                passes = json.load(handle)["beam_passes"]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        rows.append((size, loop, peer, beam_run, passes))
        _print(rows, pipeline_args)


def _columns(run: Run | None, size: int, seconds_width: int, mb_width: int) -> str:
    if run is None:
        return f"{'-':>{seconds_width}} {'-':>{mb_width}} {'-':>6} {'-':>5}"
    return (f"{run.wall_s:{seconds_width}.1f} {run.peak_mb:{mb_width}.0f} {size / run.wall_s:6.1f} "
            f"{run.cores_busy:5.2f}")


def _ratio(numerator: float, denominator: float | None) -> str:
    return f"{numerator / denominator:7.2f}" if denominator else f"{'-':>7}"


def _print(rows, pipeline_args) -> None:
    print(f"\npipeline options: {' '.join(pipeline_args) or '(defaults)'}; cores: {os.cpu_count()}")
    print(f"{'records':>8} | {'loop s':>7} {'loop MB':>8} {'rec/s':>6} {'cores':>5} "
          f"| {'peer s':>7} {'peer MB':>8} {'rec/s':>6} {'cores':>5} "
          f"| {'pipeline s':>10} {'MB':>6} {'rec/s':>6} {'cores':>5} {'beam s':>6} {'cores':>5} "
          f"| {'vs loop':>7} {'vs peer':>7} {'MB/loop':>7}")
    for size, loop, peer, beam_run, passes in rows:
        print(f"{size:8d} | {_columns(loop, size, 7, 8)} | {_columns(peer, size, 7, 8)} | {beam_run.wall_s:10.1f} "
              f"{beam_run.peak_mb:6.0f} {size / beam_run.wall_s:6.1f} {beam_run.cores_busy:5.2f} {passes['wall_s']:6.1f} "
              f"{passes['cores_busy']:5.2f} | {_ratio(beam_run.wall_s, loop and loop.wall_s)} "
              f"{_ratio(beam_run.wall_s, peer and peer.wall_s)} {_ratio(beam_run.peak_mb, loop and loop.peak_mb)}")
    print("vs loop, vs peer: the pipeline's wall time / the loop's and the parallel peer's; MB/loop: peak memory ratio")
    print("cores: CPU seconds / wall seconds of the whole process tree (2.0 = both cores busy throughout on 2 cores);"
          "\nbeam s, cores: the same for the Beam job alone (run_summary.json's beam_passes: no imports, no report)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
