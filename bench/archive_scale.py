"""What the launcher costs as the archive grows: N files through a Dataflow dry run (and, with
--local, through the local runner), in one invocation.

For each N, a folder of N hard links to one generated contest-layout record (no disk but the
directory entries) plus its labels file; then `python -m beam_pipeline` as a child process. A dry
run builds and validates the whole Dataflow job (both passes, the sdist of setup.py) and submits
nothing, so its wall time and peak memory are the launcher's own, and the pipeline proto it prints
is the graph that would be submitted. Printed per N: wall time, peak memory of the process tree,
proto size, and each as a ratio to the smallest N (#15's targets: at 10^6 files within 1.5x the
wall time and 1.2x the memory of 10^4, the proto under 1 MB and within 10%).

    python bench/archive_scale.py --sizes 10000 100000 1000000 [--local] [--reprocess] [--work_dir DIR]

--local runs the same folders on the local runner too (every hard link is decoded: that measures
the job, not only the launcher, and takes about a minute per 10^4 files on two cores).
--reprocess also measures `python -m beam_pipeline.reprocess` (a Dataflow dry run) on each folder as
INCOMING, against a ROOT whose ledger already records every one of its N files (the nightly case:
the launcher must not read the ledger's N lines, list INCOMING or hash anything), with the
transform of a small main run made once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile

from process_tree import Run, measure  # bench/ is on sys.path when a script in it runs

from beam_pipeline.synthetic.generator import generate_dataset

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
DATAFLOW_DRY_RUN = ["--runner", "DataflowRunner", "--dry_run=True", "--project", "archive-scale-bench",
                    "--region", "europe-west1", "--temp_location", "gs://archive-scale-bench/tmp",
                    "--setup_file", os.path.join(REPO, "setup.py")]
PROTO_LINE = re.compile(r"pipeline proto (\d+) bytes")
LINKS_PER_COPY = 50_000
"""ext4 allows 65,000 links to one inode: each folder links to copies of the record, this many per copy."""


def linked_archive(work_dir: str, size: int) -> tuple[str, str]:
    """TRAIN folder with `size` hard links to copies of one generated record (in `copies/` beside it),
    and its labels file; cached, and rebuilt when a previous build did not finish."""
    seed_root = os.path.join(work_dir, "seed")
    if not os.path.isdir(seed_root):
        generate_dataset(seed_root, n_train=1, n_test=0, seed=15)
    seed_file = next(os.path.join(seed_root, "TRAIN", name) for name in os.listdir(os.path.join(seed_root, "TRAIN")))
    root = os.path.join(work_dir, f"linked-{size}")
    train_dir, labels = os.path.join(root, "TRAIN"), os.path.join(root, "reference.txt")
    if not os.path.exists(labels):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(train_dir)
        os.makedirs(os.path.join(root, "copies"))
        with open(labels + ".partial", "w") as handle:
            for index in range(size):
                record_id = f"TRAIN{index:07d}"
                copy = os.path.join(root, "copies", f"{index // LINKS_PER_COPY}.mat")
                if index % LINKS_PER_COPY == 0:
                    shutil.copyfile(seed_file, copy)
                os.link(copy, os.path.join(train_dir, record_id + ".mat"))
                handle.write(f"{record_id}\t{index % 2}\n")
        os.rename(labels + ".partial", labels)  # last: a half-built folder is rebuilt next time
    return train_dir, labels


def recorded_root(work_dir: str, size: int, train_dir: str) -> str:
    """A reprocessing ROOT whose ledger records each of the `size` files of `train_dir` as published
    (size and time as listed, so a run finds nothing new); cached."""
    root = os.path.join(work_dir, f"root-{size}")
    ledger = os.path.join(root, "ledger.jsonl")
    if not os.path.exists(ledger):
        os.makedirs(root, exist_ok=True)
        with open(ledger + ".partial", "w") as handle:
            handle.write(json.dumps({"format": "ecg-reprocess-ledger/1", "batches": ["batch-1"]}) + "\n")
            with os.scandir(train_dir) as entries:
                for entry in entries:
                    info = entry.stat()
                    handle.write(json.dumps({"path": entry.path, "size": info.st_size, "mtime": info.st_mtime,
                                             "sha256": "recorded", "batch": "batch-1"}) + "\n")
        os.rename(ledger + ".partial", ledger)
    return root


def base_transform(work_dir: str) -> str:
    """The output of a main run on a few generated records (its transform_fn): made once."""
    out = os.path.join(work_dir, "base-out")
    if not os.path.exists(os.path.join(out, "_SUCCESS")):
        data = os.path.join(work_dir, "base-data")
        generate_dataset(data, n_train=8, n_test=0, seed=16)
        shutil.rmtree(out, ignore_errors=True)
        run_job(os.path.join(data, "TRAIN"), os.path.join(data, "reference.txt"), out, [])  # raises if it fails
    return out


def run_reprocess(incoming: str, transform_dir: str, root: str) -> Run:
    return measure([sys.executable, "-m", "beam_pipeline.reprocess", "--incoming", incoming,
                    "--transform_dir", transform_dir, "--output_root", root, *DATAFLOW_DRY_RUN], cwd=REPO)


def run_job(train_dir: str, labels: str, output_dir: str, runner_args: list[str]) -> Run:
    return measure([sys.executable, "-m", "beam_pipeline", "--train_dir", train_dir, "--labels", labels,
                    "--output_dir", output_dir, *runner_args], cwd=REPO)


def proto_bytes(run: Run) -> int:
    match = PROTO_LINE.search(run.stdout)
    if match is None:
        raise SystemExit(f"the dry run printed no pipeline proto size: {run.stdout.strip()!r}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work_dir", default=os.path.join(REPO, "bench_data", "archive_scale"))
    parser.add_argument("--local", action="store_true", help="also run every size on the local runner")
    parser.add_argument("--reprocess", action="store_true", help="also a reprocessing dry run against a full ledger")
    args = parser.parse_args()
    transform_dir = base_transform(args.work_dir) if args.reprocess else None
    rows: list[Row] = []
    for size in sorted(args.sizes):
        train_dir, labels = linked_archive(args.work_dir, size)
        scratch = tempfile.mkdtemp(prefix="ecg-archive-")
        try:
            dry = run_job(train_dir, labels, os.path.join(scratch, "dry"), DATAFLOW_DRY_RUN)
            local = run_job(train_dir, labels, os.path.join(scratch, "out"), []) if args.local else None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        nightly = None
        if transform_dir is not None:
            nightly = run_reprocess(train_dir, transform_dir, recorded_root(args.work_dir, size, train_dir))
        rows.append(Row(size, dry, proto_bytes(dry), local, nightly, nightly and proto_bytes(nightly)))
        _print(rows)


@dataclasses.dataclass(frozen=True)
class Row:
    size: int
    dry: Run
    proto: int
    local: Run | None
    reprocess: Run | None
    reprocess_proto: int | None


def _ratios(run: Run, first: Run) -> str:
    return f"{run.wall_s:8.1f} {run.wall_s / first.wall_s:5.2f} {run.peak_mb:8.0f} {run.peak_mb / first.peak_mb:5.2f}"


def _print(rows: list[Row]) -> None:
    first = rows[0]
    print(f"\n{'files':>9} | {'dry run s':>9} {'x':>5} {'peak MB':>8} {'x':>5} {'proto KB':>9} {'x':>5} "
          f"| {'local s':>8} {'x':>5} {'peak MB':>8} {'x':>5} "
          f"| {'nightly s':>9} {'x':>5} {'peak MB':>8} {'x':>5} {'proto KB':>9} {'x':>5}")
    for row in rows:
        local_columns = (f"{'-':>8} {'-':>5} {'-':>8} {'-':>5}" if row.local is None else
                         _ratios(row.local, first.local))
        nightly_columns = (f"{'-':>9} {'-':>5} {'-':>8} {'-':>5} {'-':>9} {'-':>5}" if row.reprocess is None else
                           f" {_ratios(row.reprocess, first.reprocess)} {row.reprocess_proto / 1024:9.1f} "
                           f"{row.reprocess_proto / first.reprocess_proto:5.2f}")
        print(f"{row.size:9d} | {row.dry.wall_s:9.1f} {row.dry.wall_s / first.dry.wall_s:5.2f} {row.dry.peak_mb:8.0f} "
              f"{row.dry.peak_mb / first.dry.peak_mb:5.2f} {row.proto / 1024:9.1f} {row.proto / first.proto:5.2f} "
              f"| {local_columns} | {nightly_columns}")
    print("x: the figure divided by the smallest size's (targets at 10^6 vs 10^4 files: dry run s <= 1.5, "
          "peak MB <= 1.2, proto under 1 MB and x within 0.9..1.1); nightly: the reprocessing dry run, "
          "its ledger recording every file")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
