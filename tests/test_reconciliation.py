"""A run whose counts do not reconcile fails (exit 1, nothing published), whatever lost the elements.

The loss is injected where a runner bug would cause it (inside the job, after discovery): the job's own
count of written examples, or the labels-file findings that reach `errors/`. Today's runners are
trusted for nothing: the summary's counts are checked before publishing.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from beam_pipeline.cli.main_command import main
from beam_pipeline.graph import sources
from beam_pipeline.runs import job
from beam_pipeline.runs.summary import check_reconciled, mismatches
from ecg_common.cli import EXIT_FAILED, EXIT_OK
from ecg_common.rejections import Rejection
from ecg_common.schema import ECG_SHAPE


@pytest.fixture()
def small_set(tmp_path):
    """Six contest-layout records and a labels file naming one id without a file (one finding)."""
    rng = np.random.default_rng(3)
    (tmp_path / "TRAIN").mkdir()
    lines = []
    for i in range(6):
        scipy.io.savemat(tmp_path / "TRAIN" / f"TRAIN{i}.mat", {"data": rng.normal(size=ECG_SHAPE).astype(np.float32)})
        lines.append(f"TRAIN{i}\t{i % 2}")
    lines.append("NOFILE\t1")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _run(root, out) -> int:
    return main(["--train_dir", str(root / "TRAIN"), "--labels", str(root / "labels.txt"), "--output_dir", str(out)])


def test_a_clean_run_reconciles(small_set, capsys):
    assert _run(small_set, small_set / "out") == EXIT_OK
    assert "wrote" in capsys.readouterr().out


def test_examples_lost_in_the_job_fail_the_run_and_publish_nothing(small_set, monkeypatch, capsys):
    real_counters = job.counters_with_prefix
    # the job found every file but "wrote" one fewer: elements lost between discovery and the shards
    monkeypatch.setattr(job, "counters_with_prefix", lambda result, prefix: {
        name: count - name.endswith("_written") for name, count in real_counters(result, prefix).items()})
    assert _run(small_set, small_set / "out") == EXIT_FAILED
    message = capsys.readouterr().err.strip()
    assert "do not reconcile" in message and "train: 6 files found, 5 written + 0 rejected" in message
    assert len(message.splitlines()) == 1
    assert not (small_set / "out").exists()
    assert not [p for p in small_set.iterdir() if ".staging-" in p.name]


def losing_the_last_finding(process):
    """`sources._InOrderFn.process` that counts every labels finding, then loses the last one before
    errors/labels.jsonl."""
    def lossy(self, keyed):
        outputs = list(process(self, keyed))
        findings = [output for output in outputs if isinstance(output, Rejection)]
        return findings[:-1] + [output for output in outputs if not isinstance(output, Rejection)]
    return lossy


def test_label_findings_lost_in_the_job_fail_the_run(small_set, monkeypatch, capsys):
    monkeypatch.setattr(sources._InOrderFn, "process", losing_the_last_finding(sources._InOrderFn.process))
    assert _run(small_set, small_set / "out") == EXIT_FAILED
    assert "labels file: 1 findings, 0 written" in capsys.readouterr().err
    assert not (small_set / "out").exists()


def test_mismatches_names_every_split_that_does_not_add_up():
    summary = {"files_found": {"train": 10, "test": 4}, "examples_written": {"train": 9, "test": 4},
               "rejected_total": {"train": 0, "test": 0}, "label_file_findings": {"invalid_label": 2},
               "label_file_findings_expected": 2}
    assert mismatches(summary) == ["train: 10 files found, 9 written + 0 rejected"]
    summary["examples_written"]["train"] = 10
    check_reconciled(summary)  # reconciles: no exception
