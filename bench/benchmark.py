"""Pipeline vs. the hand-written loop, on the same generated data, in one invocation.

For each size: generate N synthetic TRAIN records once (cached under --data_root), run the baseline
loop (bench/baseline_loop.py) and the pipeline with its default options, each as a child process,
and print wall time, peak memory of the whole process tree (sampled every 0.1 s, workers included),
records/s and the ratio pipeline / loop. Extra arguments after `--` go to the pipeline.

    python bench/benchmark.py --sizes 1000 5000 [--skip_baseline] [-- --direct_running_mode=...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from beam_pipeline.synthetic import generate_dataset

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)


def _children(pid: int) -> list[int]:
    """All descendants of `pid`, read from /proc (no psutil dependency)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def measure(command: list[str]) -> tuple[float, float]:
    """Runs `command`; returns (wall seconds, peak RSS of its process tree in MB)."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_mb(p) for p in [process.pid, *_children(process.pid)]))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}): {stderr.strip().splitlines()[-1:]}")
    return wall, peak


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
                 os.path.join(scratch, "loop.tfrecord.gz")])
            beam_run = measure([sys.executable, "-m", "beam_pipeline", "--train_dir", os.path.join(root, "TRAIN"),
                                "--labels", os.path.join(root, "reference.txt"),
                                "--output_dir", os.path.join(scratch, "out"), *pipeline_args])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        rows.append((size, loop, beam_run))
        _print(rows, pipeline_args)


def _print(rows, pipeline_args) -> None:
    print(f"\npipeline options: {' '.join(pipeline_args) or '(defaults)'}; cores: {os.cpu_count()}")
    print(f"{'records':>8} | {'loop s':>7} {'loop MB':>8} {'rec/s':>6} | {'pipeline s':>10} {'MB':>6} {'rec/s':>6} "
          f"| {'time ratio':>10} {'MB ratio':>8}")
    for size, loop, beam_run in rows:
        loop_cols = f"{loop[0]:7.1f} {loop[1]:8.0f} {size / loop[0]:6.1f}" if loop else f"{'-':>7} {'-':>8} {'-':>6}"
        ratio = f"{beam_run[0] / loop[0]:10.2f} {beam_run[1] / loop[1]:8.2f}" if loop else f"{'-':>10} {'-':>8}"
        print(f"{size:8d} | {loop_cols} | {beam_run[0]:10.1f} {beam_run[1]:6.0f} {size / beam_run[0]:6.1f} | {ratio}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
