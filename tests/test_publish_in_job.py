"""`--publish_in_job`: the job's own last step writes the summary and the report and publishes the
output (graph/finish.py, runs/finishing.py; for reprocessing, the batch and the ledger:
reprocess_job.BatchFinisher), for launches where nothing runs after submission (Dataflow Flex
Templates). The launcher's own post-job path is disabled in these runs, so whatever
is published was published by the job, from the counts it tallied as data."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from batch_data import ecg, run_base, save_record, write_training_set
from beam_pipeline.cli.main_command import main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from beam_pipeline.graph import sources
from beam_pipeline.runs import job, reprocess_job
from beam_pipeline.runs.job import JobConfig, run_job
from beam_pipeline.runs.publish import OutputClaim
from beam_pipeline.runs.reprocess_job import ReprocessConfig, run_reprocess
from ecg_common.cli import EXIT_FAILED, EXIT_OK
from test_multilabel_pipeline import CLASSES
from test_pipeline import read_examples
from test_reconciliation import losing_the_last_finding
from test_scale_out import DATAFLOW_DRY_RUN

RUN_COSTS = ("wall_time_s", "peak_rss_mb", "beam_passes")
"""Summary fields that measure the run rather than describe its output (the launcher's path also
times the Beam job alone, which the job cannot do for itself)."""


def _described(out) -> dict:
    summary = json.loads((out / "run_summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in RUN_COSTS}


@pytest.fixture
def launcher_idle(monkeypatch):
    """Makes the launcher's post-job path fail if it is taken: reading Beam's counters and publishing."""
    def refuse(*_):
        raise AssertionError("the launcher finished a run that the job publishes itself")

    monkeypatch.setattr(job, "counters_with_prefix", refuse)
    monkeypatch.setattr(OutputClaim, "publish", refuse)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("in-job")
    write_training_set(root, np.random.default_rng(41), 8)
    shutil.copytree(root / "TRAIN", root / "TEST")
    shutil.copy(next((root / "TRAIN").glob("*.mat")), root / "TRAIN" / "NOLABEL.mat")  # rejected: missing_label
    with open(root / "labels.txt", "a") as handle:
        handle.write("GHOST\t1\nBAD\t7\n")  # findings: a label without a file, an unusable line
    return root


def _args(data, out, *extra) -> list[str]:
    return ["--train_dir", str(data / "TRAIN"), "--test_dir", str(data / "TEST"), "--labels", str(data / "labels.txt"),
            "--output_dir", str(out), "--max_error_rate", "0.5", *extra]


@pytest.fixture(scope="module")
def launcher_published(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("launcher") / "out"
    assert main(_args(data, out)) == EXIT_OK
    return out


def test_the_job_publishes_what_the_launcher_would(data, launcher_published, tmp_path, launcher_idle):
    out = tmp_path / "out"
    assert main(_args(data, out, "--publish_in_job")) == EXIT_OK
    assert (out / "_SUCCESS").exists() and (out / "report" / "index.html").exists()
    summary = _described(out)
    assert summary == _described(launcher_published)
    assert summary["files_found"] == {"train": 9, "test": 8} and summary["reconciled"]
    assert summary["rejected"]["train"] == {"missing_label": 1}
    assert summary["label_file_findings"] == {"invalid_label": 1, "label_without_file": 1}
    assert summary["class_balance"]["test"]["unlabelled"] == 0 and sum(summary["class_balance"]["train"].values()) == 8
    for split in ("train", "test"):
        assert read_examples(out, split).keys() == read_examples(launcher_published, split).keys()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_counts_that_do_not_reconcile_fail_the_job_and_publish_nothing(data, tmp_path, monkeypatch, launcher_idle,
                                                                       capsys):
    monkeypatch.setattr(sources._InOrderFn, "process", losing_the_last_finding(sources._InOrderFn.process))
    assert main(_args(data, tmp_path / "out", "--publish_in_job")) == EXIT_FAILED
    message = capsys.readouterr().err.strip()
    assert "do not reconcile" in message and "labels file: 2 findings, 1 written" in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_a_multi_label_job_counts_its_classes_as_the_launcher_does(real_ecg_dir, tmp_path, monkeypatch):
    classes = tmp_path / "classes.tsv"
    classes.write_text(CLASSES)
    args = ["--train_dir", str(real_ecg_dir / "cinc2021"), "--dx_from_header", "--classes", str(classes)]
    assert main([*args, "--output_dir", str(tmp_path / "launcher")]) == EXIT_OK
    monkeypatch.setattr(job, "counters_with_prefix", lambda *_: pytest.fail("the launcher read the counters"))
    assert main([*args, "--output_dir", str(tmp_path / "job"), "--publish_in_job"]) == EXIT_OK
    in_job, launcher = _described(tmp_path / "job"), _described(tmp_path / "launcher")
    assert in_job["classes"] == launcher["classes"] and in_job["class_balance"] == launcher["class_balance"]
    assert sum(in_job["classes"]["training_records"].values()) > 0 and in_job["classes"]["ignored_codes"]["train"]
    assert in_job["demographics"] == launcher["demographics"]


def test_a_job_that_publishes_itself_builds_on_a_dataflow_dry_run(data, tmp_path, capsys):
    """The Flex Template shape of the job: its last step is part of the graph Dataflow validates."""
    assert main(_args(data, tmp_path / "out", "--publish_in_job", *DATAFLOW_DRY_RUN)) == EXIT_OK
    assert re.search(r"dry run: built the job \(\d+ steps\) on DataflowRunner; pipeline proto \d+ bytes",
                     capsys.readouterr().out)
    summary = run_job(JobConfig(str(data / "TRAIN"), str(data / "labels.txt"), str(tmp_path / "out"),
                                publish_in_job=True), DATAFLOW_DRY_RUN)
    assert {"Finish", "WriteSummaryAndPublish", "SumTallies"} <= set(summary["steps"])
    assert not (tmp_path / "out").exists()


# Reprocessing ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """An earlier run's transform, and INCOMING: labelled records, an undecodable file, a labels finding."""
    work = tmp_path_factory.mktemp("night-in-job")
    base, _, _ = run_base(work / "base", np.random.default_rng(43))
    incoming = work / "incoming"
    rng = np.random.default_rng(44)
    for index in range(6):
        save_record(incoming, f"N{index}", ecg(rng))
    save_record(incoming, "BROKEN", b"not a MATLAB file")
    (work / "labels.txt").write_text("N0\t1\nN1\t0\nN2\tmaybe\n")
    return dict(base=base, incoming=incoming, labels=work / "labels.txt")


def _reprocess_args(night, root, *extra) -> list[str]:
    return ["--incoming", str(night["incoming"]), "--transform_dir", str(night["base"]), "--output_root", str(root),
            "--labels", str(night["labels"]), "--max_error_rate", "0.5", *extra]


def _rounded(value):
    """`value` with every float rounded to 9 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _batch(root):
    (batch,) = [p for p in root.iterdir() if p.name.startswith("batch-")]
    return batch


def _ledger_lines(root) -> tuple[dict, set[str]]:
    head, *lines = (root / "ledger.jsonl").read_text().splitlines()
    return json.loads(head), set(lines)


def test_a_reprocessing_job_publishes_its_batch_and_ledger_as_the_launcher_would(night, tmp_path, monkeypatch):
    assert reprocess_main(_reprocess_args(night, tmp_path / "launcher")) == EXIT_OK
    monkeypatch.setattr(reprocess_job, "counters_with_prefix", lambda *_: pytest.fail("the launcher read counters"))
    assert reprocess_main(_reprocess_args(night, tmp_path / "job", "--publish_in_job")) == EXIT_OK
    monkeypatch.undo()
    in_job, launcher = _batch(tmp_path / "job"), _batch(tmp_path / "launcher")
    assert (in_job / "_SUCCESS").exists() and (in_job / "report" / "index.html").exists()
    described = {key: value for key, value in _described(in_job).items() if key not in ("batch", "drift")}
    assert described == {key: value for key, value in _described(launcher).items() if key not in ("batch", "drift")}
    # The batch's moments are sums over its records in the order the runner combined them: equal to rounding.
    assert _rounded(_described(in_job)["drift"]) == _rounded(_described(launcher)["drift"])
    assert described["files_found"] == {"data": 7} and described["rejected"]["data"] == {"not_matlab": 1}
    assert described["label_file_findings"] == {"invalid_label": 1}
    assert read_examples(in_job, "data").keys() == read_examples(launcher, "data").keys()
    batch_of = lambda lines, batch: {line.replace(batch, "BATCH") for line in lines}  # noqa: E731
    head, lines = _ledger_lines(tmp_path / "job")
    assert head["batches"] == [in_job.name] and len(lines) == 7
    assert batch_of(lines, in_job.name) == batch_of(_ledger_lines(tmp_path / "launcher")[1], launcher.name)
    assert not [p for p in (tmp_path / "job").iterdir() if ".staging-" in p.name or ".tmp-" in p.name]

    ledger_before = (tmp_path / "job" / "ledger.jsonl").read_bytes()
    assert reprocess_main(_reprocess_args(night, tmp_path / "job", "--publish_in_job")) == EXIT_OK  # nothing new
    assert _batch(tmp_path / "job") == in_job and (tmp_path / "job" / "ledger.jsonl").read_bytes() == ledger_before
    assert not [p for p in (tmp_path / "job").iterdir() if ".staging-" in p.name or ".tmp-" in p.name]


def test_a_reprocessing_job_that_publishes_itself_builds_on_a_dataflow_dry_run(night, tmp_path, capsys):
    root = tmp_path / "root"
    assert reprocess_main(_reprocess_args(night, root, "--publish_in_job", *DATAFLOW_DRY_RUN)) == EXIT_OK
    assert re.search(r"dry run: built the job \(\d+ steps\) on DataflowRunner; pipeline proto \d+ bytes",
                     capsys.readouterr().out)
    config = ReprocessConfig(str(night["incoming"]), str(night["base"]), str(root), publish_in_job=True)
    result = run_reprocess(config, DATAFLOW_DRY_RUN)
    assert {"Select", "WriteManifest", "Finish", "WriteSummaryAndPublish", "SumTallies"} <= set(result.summary["steps"])
    assert not [p for p in root.iterdir() if p.name.startswith(("batch-", ".batch-", ".ledger"))]
