"""The labels file through both commands on the real CPSC 2018 records (A1980-A1989, 1 normal of 10):
the challenge's `REFERENCE.csv` (classes 1-9, 1 = Normal, extra label columns) read with
`--normal_labels 1` labels every record as `labels.txt` says; a file of class names read as 0/1 stops
the run with one line that says why."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_pipeline import read_errors, read_examples

from beam_pipeline.cli import reprocess_command
from beam_pipeline.cli.main_command import main
from ecg_common.cli import EXIT_CONFIG, EXIT_OK

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPSC_HEADER = "Recording,First_label,Second_label,Third_label"


def _truth(folder) -> dict[str, int]:
    """record id -> 0/1 from the folder's `labels.txt` (the binary truth shipped with the records)."""
    rows = [line.split("\t") for line in (folder / "labels.txt").read_text().splitlines() if line.strip()]
    return {rid: int(label) for rid, label in rows}


def _reference_style(truth: dict[str, int]) -> str:
    """A REFERENCE.csv-style file for `truth`: First_label 1 for a normal record, for an abnormal one a
    class 2-9 taken from its position (arbitrary but fixed), and further labels, 1 among them, that
    must not count."""
    lines = [CPSC_HEADER]
    for k, (rid, label) in enumerate(sorted(truth.items())):
        first = 1 if label == 0 else 2 + k % 8
        extra = {0: ",,", 1: f",1,{2 + (k + 3) % 8}"}[k % 2] if label else ",,"
        lines.append(f"{rid},{first}{extra}")
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture(scope="module")
def cpsc(real_ecg_dir):
    return real_ecg_dir / "cpsc2018"


@pytest.fixture(scope="module")
def reference_run(cpsc, tmp_path_factory):
    out = tmp_path_factory.mktemp("cpsc") / "out"
    code = main(["--train_dir", str(cpsc), "--labels", str(cpsc / "REFERENCE.csv"), "--normal_labels", "1",
                 "--output_dir", str(out)])
    return out, code


def test_the_real_reference_csv_with_normal_labels_gives_the_binary_truth(cpsc, reference_run):
    out, code = reference_run
    assert code == EXIT_OK
    truth = _truth(cpsc)
    assert sorted(truth.values()) == [0] + [1] * 9
    assert {rid: e["label"] for rid, e in read_examples(out, "train").items()} == truth
    assert read_errors(out, "train") == {} and read_errors(out, "labels") == {}
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["rejected_total"] == {"train": 0}


def test_reprocess_reads_a_reference_style_file_with_the_same_flag(cpsc, reference_run, tmp_path):
    base, code = reference_run
    assert code == EXIT_OK
    truth = _truth(cpsc)
    labels = tmp_path / "REFERENCE.csv"
    labels.write_text(_reference_style(truth), newline="")
    assert reprocess_command.main(["--incoming", str(cpsc), "--transform_dir", str(base), "--output_root",
                                   str(tmp_path / "root"), "--labels", str(labels), "--normal_labels", "1"]) == EXIT_OK
    [batch] = [p for p in (tmp_path / "root").iterdir() if p.name.startswith("batch-")]
    assert {rid: e["label"] for rid, e in read_examples(batch, "data").items()} == truth
    assert read_errors(batch, "labels") == {}


def test_class_names_stop_the_run_with_a_line_that_says_why(cpsc, tmp_path):
    names = ["AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE"]
    truth = _truth(cpsc)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{rid}\t{'Normal' if label == 0 else names[k % 8]}\n"
                              for k, (rid, label) in enumerate(sorted(truth.items()))))
    result = subprocess.run([sys.executable, "-m", "beam_pipeline", "--train_dir", str(cpsc), "--labels", str(labels),
                             "--output_dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == EXIT_CONFIG
    *log, last = result.stderr.strip().splitlines()
    assert last == (f"error: no training record with a valid label: 10 .mat files in {cpsc}, 0 usable labels in "
                    f"{labels}; 10 unusable lines: 10 with a label that is not 0 or 1 ('AF', 'I-AVB', 'LBBB', ...); "
                    f"for class names or numbers (e.g. CPSC REFERENCE.csv) see --normal_labels")
    assert any("WARNING" in line and "10 unusable lines" in line for line in log)
    assert not (tmp_path / "out").exists()
