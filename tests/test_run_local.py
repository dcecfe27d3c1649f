"""`run_local.sh`'s demo, run for real: it writes into its cache folder outside the repository, and
nothing into the repository tree.

The quick demo (`ECG_DEMO_QUICK=1`: 40 TRAIN / 12 TEST records, 3 epochs) takes every step of the full
one (generate, pipeline, train, predict, the closing summary) with the same paths; only the sizes
differ. No `ECG_DEMO_DIR` and a temporary `XDG_CACHE_HOME`, so the default location is what is tested.
"""
from __future__ import annotations

import csv
import glob
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "__pycache__"}
"""Not the demo's doing: git's own files, the environment run_local.sh sets up on first use, and the
bytecode any Python run leaves beside the sources."""
DEMO_SUBDIR = ("ecg-beam-pipeline", "demo")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under root, outside `SKIPPED_DIRS`."""
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in names:
            stat = os.lstat(os.path.join(folder, name))
            files[os.path.relpath(os.path.join(folder, name), root)] = (stat.st_size, stat.st_mtime_ns)
    return files


def test_demo_writes_into_the_cache_folder_and_nothing_into_the_repository(tmp_path):
    assert glob.glob(str(REPO / ".venv" / ".installed-*")), "set up .venv first (./run_tests.sh does)"
    env = {name: value for name, value in os.environ.items() if name != "ECG_DEMO_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), ECG_DEMO_QUICK="1", PYTHONPATH=str(REPO),
               PYTHONDONTWRITEBYTECODE="1")
    before = _tree(REPO)
    result = subprocess.run([str(REPO / "run_local.sh")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _tree(REPO) == before

    demo = tmp_path.joinpath("cache", *DEMO_SUBDIR)
    assert len(list((demo / "data" / "TRAIN").glob("*.mat"))) == 40
    assert (demo / "output" / "tfrecords" / "_SUCCESS").is_file()
    assert (demo / "output" / "model" / "metrics.json").is_file()
    with open(demo / "output" / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and set(rows[0]) == {"record_id", "probability", "predicted_label", "true_label"}
    closing = result.stdout[result.stdout.index("Demo finished"):]
    assert f"in {demo} " in closing and f"{demo}/output/predictions.csv" in closing
