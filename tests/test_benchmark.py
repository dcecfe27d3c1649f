"""The benchmark script still works end to end (at a tiny size; speed itself is never asserted)."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def printed_ratio(numerator: float, denominator: float, numbers_step: float, ratio_step: float = 0.01):
    """The ratio as the script printed it, from figures that were themselves printed rounded.

    Each printed figure is off by up to half its step, so the ratio of two of them is off by up to
    ratio * (half_step / numerator + half_step / denominator), plus half the ratio's own step: the bound
    a correct script stays within, and a wrong ratio (another baseline, another figure) does not.
    """
    ratio = numerator / denominator
    half = numbers_step / 2
    return pytest.approx(ratio, abs=ratio * (half / numerator + half / denominator) + ratio_step / 2 + 1e-9)


def test_benchmark_prints_the_three_runs_and_their_ratios(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "bench", "benchmark.py"), "--sizes", "24",
                             "--data_root", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    row = [line for line in result.stdout.splitlines() if line.strip().startswith("24 |")]
    assert row, result.stdout
    numbers = [float(x) for x in re.findall(r"\d+\.\d+|\d+", row[0].replace("|", " "))]
    (size, loop_s, loop_mb, _, loop_cores, peer_s, peer_mb, _, peer_cores, beam_s, beam_mb, _, beam_cores, job_s,
     job_cores, time_ratio, peer_ratio, mb_ratio) = numbers
    assert size == 24 and loop_s > 0 and peer_s > 0 and beam_s > 0 and loop_mb > 50 and peer_mb > 50 and beam_mb > 50
    assert 0.3 < loop_cores <= 1.2  # one process, one busy thread (the sampled CPU time is not lost)
    assert 0.3 < peer_cores <= (os.cpu_count() or 1) + 0.2
    assert 0.3 < beam_cores <= (os.cpu_count() or 1) + 0.2
    assert 0 < job_s < beam_s and 0.1 < job_cores <= (os.cpu_count() or 1) + 0.2
    assert time_ratio == printed_ratio(beam_s, loop_s, 0.1)
    assert peer_ratio == printed_ratio(beam_s, peer_s, 0.1)
    assert mb_ratio == printed_ratio(beam_mb, loop_mb, 1)


def test_cpu_timeline_prints_cores_busy_per_interval_and_the_log_lines():
    busy = ("import logging, time; logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s'); "
            "logging.info('phase one'); end = time.time() + 1.5\nwhile time.time() < end: pass")
    result = subprocess.run([sys.executable, os.path.join(REPO, "bench", "cpu_timeline.py"), "--interval", "0.25", "--",
                             sys.executable, "-c", busy], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s*\d+\.\d+\s+\d+\.\d+", line)]
    assert len(rows) >= 4 and any("phase one" in line for line in result.stdout.splitlines())
    assert max(float(row[1]) for row in rows) > 0.7  # one core spinning shows as ~1.0
    assert re.search(r"exit 0; \d+\.\d CPU s in \d+\.\d s", result.stdout)


def test_archive_scale_prints_the_launchers_figures_per_size_against_the_smallest(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "bench", "archive_scale.py"), "--sizes", "30", "10",
                             "--reprocess", "--work_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout.rsplit("files |", 1)[1]
    rows = [[float(x) for x in re.findall(r"\d+\.\d+|\d+", line.replace("|", " "))]
            for line in table.splitlines() if re.match(r"\s+\d+ \|", line)]
    assert [row[0] for row in rows] == [10, 30]  # smallest first: the baseline of the ratios
    for (size, wall_s, wall_x, peak_mb, peak_x, proto_kb, proto_x,
         nightly_s, nightly_x, nightly_mb, nightly_mb_x, nightly_kb, nightly_kb_x) in rows:
        assert wall_s > 0 and peak_mb > 50 and proto_kb > 10  # a whole job was built, by a real process
        assert wall_x == printed_ratio(wall_s, rows[0][1], 0.1)
        assert peak_x == printed_ratio(peak_mb, rows[0][3], 1)
        assert proto_x == printed_ratio(proto_kb, rows[0][5], 0.1)
        assert nightly_s > 0 and nightly_mb > 50 and nightly_kb > 10  # the reprocessing job was built too
        assert nightly_x == printed_ratio(nightly_s, rows[0][7], 0.1)
        assert nightly_mb_x == printed_ratio(nightly_mb, rows[0][9], 1)
        assert nightly_kb_x == printed_ratio(nightly_kb, rows[0][11], 0.1)
    train = tmp_path / "linked-30" / "TRAIN"
    assert len(os.listdir(train)) == 30 and os.stat(next(train.iterdir())).st_nlink == 1 + 30  # hard links
    assert len((tmp_path / "linked-30" / "reference.txt").read_text().splitlines()) == 30
    ledger = (tmp_path / "root-30" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 31 and not [p for p in os.listdir(tmp_path / "root-30") if p.startswith("batch-")]


def test_end_to_end_prints_pipeline_and_trainer_figures_per_size_and_removes_its_outputs(tmp_path):
    data_root, work_dir = tmp_path / "data", tmp_path / "work"
    result = subprocess.run([sys.executable, os.path.join(REPO, "bench", "end_to_end.py"), "--sizes", "16", "8",
                             "--data_root", str(data_root), "--work_dir", str(work_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout.rsplit("records", 1)[1]
    rows = [line for line in table.splitlines() if re.match(r"\s+\d+ ", line)]
    numbers = [[float(x) for x in re.findall(r"\d+\.\d+|\d+", line.replace("|", " "))] for line in rows]
    assert [row[0] for row in numbers] == [8, 16]  # smallest first: the baseline of the ratios
    assert all(line.split("|")[2].split()[-1] == "yes" for line in rows)  # a few examples are cached
    for size, load, pipe_s, rate, pipe_mb, pipe_x, train_s, train_mb, train_x, input_mb, output_mb, model_mb \
            in numbers:
        assert pipe_s > 0 and train_s > 0 and pipe_mb > 50 and train_mb > 50 and load >= 0  # real processes
        assert rate == pytest.approx(size / pipe_s, rel=0.05, abs=0.1)
        assert pipe_x == printed_ratio(pipe_mb, numbers[0][4], 1)
        assert train_x == printed_ratio(train_mb, numbers[0][7], 1)
        assert input_mb >= size * 0.2 and output_mb > 0 and model_mb > 0  # ~0.24 MB a record
    assert os.listdir(work_dir) == []  # outputs and models removed without --keep
    assert len(os.listdir(data_root / "train-16" / "TRAIN")) == 16  # the inputs are kept


def test_end_to_end_stream_makes_the_trainer_read_the_shards_even_when_the_examples_fit(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "bench", "end_to_end.py"), "--sizes", "8", "--stream",
                             "--data_root", str(tmp_path / "data"), "--work_dir", str(tmp_path / "work")],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    row = [line for line in result.stdout.rsplit("records", 1)[1].splitlines() if re.match(r"\s+8 ", line)]
    assert len(row) == 1 and row[0].split("|")[2].split()[-1] == "no", result.stdout
