"""Every bad input of the robustness issue, mixed with good records, through `python -m beam_pipeline`.

One run decodes them all: each bad file must come out as exactly one line of `errors/<split>.jsonl`
with its documented reason, every good one as an example, and `run_summary.json` must reconcile.
Further runs on the same set check the error budget (`--max_error_rate`) and `--reject_flagged`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest
import scipy.io
from test_pipeline import read_errors, read_examples

from beam_pipeline.cli.main_command import main
from ecg_common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from ecg_common.rejections import Reason
from ecg_common.schema import ECG_SHAPE, NUM_LEADS, NUM_SAMPLES

README = Path(__file__).resolve().parents[1] / "README.md"
GOOD = [f"G{k:02d}" for k in range(12)]
HOSTILE_STEMS = ["..evil", " -rf", 'quo"te\'s', "new\nline", "$(touch PWNED)", "semi;colon rm -rf x", "back\\slash"]
NON_UTF8_NAME = b"caf\xe9.mat"  # Latin-1 bytes, not UTF-8
NON_UTF8_ID = "caf\\xe9"


def _flat(seed: int) -> np.ndarray:
    signal = hf.signal(seed)
    signal[:, 7] = 0.0  # V2 unplugged
    return signal


def _clipped(seed: int) -> np.ndarray:
    t = np.arange(NUM_SAMPLES) / 500
    beats = np.sin(2 * np.pi * 1.2 * t) ** 21  # 12 narrow positive waves
    signal = hf.signal(seed) * 0.05 + 2.0 * beats[:, None]
    signal[:, 0] = np.minimum(signal[:, 0], 1.2)  # lead I saturates at 1.2 mV on every beat
    return signal


def _truncated_v73() -> bytes:
    mat = hf.v73(lambda f: hf.v73_dataset(f, "data", hf.signal(5)))
    return mat[: len(mat) // 2]


def _bad_files(outside: Path) -> dict[str, tuple[bytes, str | None, str]]:
    """record id -> (.mat bytes, .hea text or None, expected reason)."""
    val = hf.cinc_val(3)
    truncated_v5 = hf.contest(4)
    return {
        "EMPTY": (b"", None, Reason.NOT_MATLAB),
        "RANDOM": (np.random.default_rng(1).bytes(4096), None, Reason.NOT_MATLAB),
        "HTML": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", None, Reason.NOT_MATLAB),
        "TRUNC_V5": (truncated_v5[: len(truncated_v5) // 2], None, Reason.NOT_MATLAB),
        "TRUNC_V73": (_truncated_v73(), None, Reason.NOT_MATLAB),
        "NO_KEYS": (hf.savemat_bytes({"signal": hf.signal(6)}), None, Reason.NO_SIGNAL),
        "STRUCT_NO_DATA": (hf.savemat_bytes({"ECG": {"age": 50, "sex": "F"}}), None, Reason.NO_SIGNAL),
        "LEADS_1": (hf.savemat_bytes({"data": np.ones((NUM_SAMPLES, 1))}), None, Reason.BAD_SHAPE),
        "LEADS_3": (hf.savemat_bytes({"data": np.ones((NUM_SAMPLES, 3))}), None, Reason.BAD_SHAPE),
        "LEADS_15": (hf.savemat_bytes({"data": np.ones((15, NUM_SAMPLES))}), None, Reason.BAD_SHAPE),
        "SQUARE_12": (hf.savemat_bytes({"data": np.ones((NUM_LEADS, NUM_LEADS))}), None, Reason.BAD_SHAPE),
        "SHORT": (hf.savemat_bytes({"data": hf.signal(7, (4000, NUM_LEADS))}), None, Reason.TOO_SHORT),
        "NAN": (hf.savemat_bytes({"data": np.where(np.eye(NUM_SAMPLES, NUM_LEADS) > 0, np.nan, 1.0)}), None,
                Reason.NON_FINITE),
        "INF": (hf.savemat_bytes({"data": np.full(ECG_SHAPE, np.inf)}), None, Reason.NON_FINITE),
        "COMPLEX": (hf.savemat_bytes({"data": np.ones(ECG_SHAPE, np.complex128)}), None, Reason.BAD_DTYPE),
        "BOOL": (hf.savemat_bytes({"data": np.ones(ECG_SHAPE, bool)}), None, Reason.BAD_DTYPE),
        "STRING": (hf.savemat_bytes({"data": "twelve leads"}), None, Reason.BAD_DTYPE),
        "OBJECT": (hf.savemat_bytes({"data": np.array([np.ones(3), "x"], dtype=object)}), None, Reason.BAD_DTYPE),
        "OVERFLOW": (hf.savemat_bytes({"val": np.full((NUM_LEADS, NUM_SAMPLES), 32767, np.int16)}, format="4"),
                     hf.wfdb_header(gain="1e-40(0)/mV"), Reason.NON_FINITE),
        "HUGE_F32": (hf.huge_float32(15), None, Reason.IMPLAUSIBLE_AMPLITUDE),
        "HUGE_I64": (hf.huge_int64(16), None, Reason.IMPLAUSIBLE_AMPLITUDE),
        "MICROVOLTS": (hf.savemat_bytes({"data": (hf.signal(17) * 1000).astype(np.float32)}), None,
                       Reason.IMPLAUSIBLE_AMPLITUDE),
        "HEA_GARBAGE": (val, "REC twelve leads at 500 Hz\n", Reason.BAD_HEADER),
        "HEA_DISAGREES": (val, hf.wfdb_header(num_samples=4000), Reason.BAD_HEADER),
        "RATE_0": (val, hf.wfdb_header(rate=0), Reason.BAD_SAMPLING_RATE),
        "TERABYTES": (hf.v5_claiming([2**31 - 1, 2**31 - 1]), None, Reason.TOO_LARGE),
        "ZIP_BOMB": (hf.zip_bomb(400 << 20), None, Reason.TOO_LARGE),
        "CELL_BOMB": (hf.cell_bomb(), None, Reason.TOO_LARGE),
        "EXTERNAL_LINK": (hf.external_link(outside / "elsewhere.h5"), None, Reason.NOT_MATLAB),
        "VIRTUAL": (hf.virtual_dataset(outside / "elsewhere.h5"), None, Reason.NOT_MATLAB),
    }


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory):
    """TRAIN: 12 good contest records, 2 CinC records, a flat and a clipped one, and every bad input;
    TEST: good records whose file names are hostile. Also a folder outside both, which links point to."""
    root = tmp_path_factory.mktemp("hostile")
    train, test, outside = root / "TRAIN", root / "TEST", root / "outside"
    for folder in (train, test, outside, train / "sub"):
        folder.mkdir()
    hf.hdf5_elsewhere(outside / "elsewhere.h5")
    (outside / "SECRET.mat").write_bytes(hf.contest(50))
    expected = {}
    for k, rid in enumerate(GOOD):
        (train / f"{rid}.mat").write_bytes(hf.contest(k))
    (train / "CINC.mat").write_bytes(hf.cinc_val(10))
    (train / "CINC.hea").write_text(hf.wfdb_header())
    (train / "CINC_NO_HEA.mat").write_bytes(hf.cinc_val(11))  # no header: 500 Hz and 1000 units/mV assumed
    scipy.io.savemat(train / "FLAT.mat", {"data": _flat(12)})
    scipy.io.savemat(train / "CLIPPED.mat", {"data": _clipped(13)})
    for rid, (mat, header, reason) in _bad_files(outside).items():
        (train / f"{rid}.mat").write_bytes(mat)
        if header is not None:
            (train / f"{rid}.hea").write_text(header)
        expected[rid] = reason
    os.symlink(outside / "SECRET.mat", train / "SYMLINK_OUT.mat")
    expected["SYMLINK_OUT"] = Reason.OUTSIDE_INPUT
    os.symlink(train / "G00.mat", train / "SYMLINK_IN.mat")  # inside the tree: followed
    os.symlink(train / "deleted" / "gone.mat", train / "DANGLING.mat")  # inside the tree, but points nowhere
    expected["DANGLING"] = Reason.UNREADABLE
    os.mkfifo(train / "FIFO.mat")  # opening it would block forever
    expected["FIFO"] = Reason.UNREADABLE
    (train / "HEA_FIFO.mat").write_bytes(hf.cinc_val(14))
    os.mkfifo(train / "HEA_FIFO.hea")
    expected["HEA_FIFO"] = Reason.UNREADABLE
    (train / "DIR.mat").mkdir()  # a directory named like a record is not a file: not listed
    (train / "deep").mkdir()
    unlistable, _ = hf.beyond_path_max(train / "deep", "DEEP.mat", hf.contest(80))  # found by no full-path call
    expected[f"{os.path.relpath(unlistable, train)}/"] = Reason.UNLISTABLE  # one rejection for what it holds
    (train / "sub" / "G01.mat").write_bytes(hf.contest(60))
    for rid in ("NO_LABEL", "LABEL_2", "CONFLICT"):
        (train / f"{rid}.mat").write_bytes(hf.contest(70))
    expected |= {"NO_LABEL": Reason.MISSING_LABEL, "LABEL_2": Reason.INVALID_LABEL, "CONFLICT": Reason.INVALID_LABEL}
    labelled = [rid for rid in [*GOOD, "CINC", "CINC_NO_HEA", "FLAT", "CLIPPED", "SYMLINK_IN", *expected]
                if rid not in ("NO_LABEL", "LABEL_2", "CONFLICT") and not rid.endswith("/")]  # "/": a directory
    lines = ["Recording,label,comment"]  # a header line, extra columns, a BOM and CRLF (below)
    lines += [f"{rid},{k % 2},extra column" for k, rid in enumerate(labelled)]
    lines += ["G00,0,duplicate line with the same label", "LABEL_2,2", "CONFLICT,0", "CONFLICT,1", "GHOST,1", ""]
    (root / "labels.csv").write_bytes("\r\n".join(lines).encode("utf-8-sig"))
    for k, stem in enumerate(HOSTILE_STEMS):
        (test / f"{stem}.mat").write_bytes(hf.contest(100 + k))
    (test / os.fsdecode(NON_UTF8_NAME)).write_bytes(hf.contest(120))
    return root, expected


def _run(root: Path, out: Path, *extra: str) -> int:
    return main(["--train_dir", str(root / "TRAIN"), "--labels", str(root / "labels.csv"),
                 "--test_dir", str(root / "TEST"), "--output_dir", str(out), *extra])


def _tree(root: Path, skip: Path) -> set[str]:
    """Every path under `root` except `skip` and what is inside it."""
    paths = {os.path.join(parent, name) for parent, dirs, files in os.walk(root) for name in dirs + files}
    inside_skip = f"{skip}{os.sep}"
    return {os.path.relpath(path, root) for path in paths if path != str(skip) and not path.startswith(inside_skip)}


@pytest.fixture(scope="module")
def hostile_run(hostile_set, tmp_path_factory):
    root, expected = hostile_set
    before = _tree(root, root / "out")
    out = root / "out"
    code = _run(root, out, "--max_error_rate", "1")
    return root, out, expected, code, before


def test_run_survives_and_exits_0(hostile_run):
    _, out, _, code, _ = hostile_run
    assert code == EXIT_OK
    assert (out / "_SUCCESS").exists()


def test_each_bad_input_is_rejected_with_its_reason(hostile_run):
    _, out, expected, _, _ = hostile_run
    rejected = read_errors(out, "train")
    assert rejected == {**expected, "G01": Reason.DUPLICATE_ID}  # sub/G01.mat: the same id in another folder
    rows = [json.loads(line) for line in (out / "errors" / "train.jsonl").read_text().splitlines()]
    by_id = {row["record_id"]: row for row in rows}
    assert by_id["G01"]["path"].endswith("sub/G01.mat")
    assert "outside the input directory" in by_id["SYMLINK_OUT"]["detail"]
    assert "FIFO" in by_id["FIFO"]["detail"] and "header" in by_id["HEA_FIFO"]["detail"]
    assert "broken symbolic link" in by_id["DANGLING"]["detail"]
    assert "ExternalLink" in by_id["EXTERNAL_LINK"]["detail"] and "virtual" in by_id["VIRTUAL"]["detail"]
    assert "memory" in by_id["CELL_BOMB"]["detail"]
    assert "after the gain" in by_id["HUGE_F32"]["detail"] and "100 mV" in by_id["HUGE_I64"]["detail"]
    [deep] = [row for rid, row in by_id.items() if rid.startswith("deep/")]
    assert "could not be listed" in deep["detail"] and "File name too long" in deep["detail"]
    assert read_errors(out, "test") == {}


def test_statistics_stay_finite_and_examples_keep_their_shape(hostile_run):
    """Records of huge but finite values are rejected before they reach the statistics: the learned
    means and stds stay those of real mV, and no written example is flattened to a constant."""
    _, out, _, _, _ = hostile_run
    statistics = json.loads((out / "run_summary.json").read_text())["lead_statistics"]
    assert np.isfinite(statistics["mean_mv"]).all() and np.isfinite(statistics["std_mv"]).all()
    assert max(statistics["std_mv"]) < 10
    for record_id, example in read_examples(out, "train").items():
        assert np.isfinite(example["ecg"]).all() and example["ecg"].std(axis=0).max() > 0.1, record_id


def test_good_records_are_written_and_nothing_outside_is_read(hostile_run):
    root, out, _, _, _ = hostile_run
    train = read_examples(out, "train")
    assert set(train) == {*GOOD, "CINC", "CINC_NO_HEA", "FLAT", "CLIPPED", "SYMLINK_IN"}
    assert "SECRET" not in train and "DIR" not in train
    np.testing.assert_array_equal(train["SYMLINK_IN"]["ecg"], train["G00"]["ecg"])  # same file, same example


def test_labels_file_findings(hostile_run):
    _, out, _, _, _ = hostile_run
    assert read_errors(out, "labels") == {"GHOST": Reason.LABEL_WITHOUT_FILE, "LABEL_2": Reason.INVALID_LABEL,
                                          "CONFLICT": Reason.INVALID_LABEL}  # every unusable line
    assert read_examples(out, "train")["G00"]["label"] == 0  # a duplicated line with the same label is kept


def test_summary_reconciles_per_split(hostile_run):
    _, out, expected, _, _ = hostile_run
    summary = json.loads((out / "run_summary.json").read_text())
    found = len(GOOD) + 5 + len(expected) + 1  # + CINC, CINC_NO_HEA, FLAT, CLIPPED, SYMLINK_IN; + sub/G01
    assert summary["files_found"] == {"train": found, "test": len(HOSTILE_STEMS) + 1}
    assert summary["examples_written"] == {"train": len(GOOD) + 5, "test": len(HOSTILE_STEMS) + 1}
    assert summary["rejected_total"] == {"train": len(expected) + 1, "test": 0}
    for split in ("train", "test"):
        assert summary["files_found"][split] == summary["examples_written"][split] + summary["rejected_total"][split]
    assert summary["reconciled"] is True
    assert summary["error_rate"]["train"] == pytest.approx((len(expected) + 1) / found, abs=1e-6)


def test_quality_flags_are_counted_not_rejected(hostile_run):
    _, out, _, _, _ = hostile_run
    quality = json.loads((out / "run_summary.json").read_text())["quality"]["train"]
    assert quality["records_flagged"] == 2
    assert quality["flat_lead"] == {"records": 1, "by_lead": {"V2": 1}, "record_ids": ["FLAT"],
                                    "record_ids_truncated": False}
    assert quality["clipped"]["record_ids"] == ["CLIPPED"] and quality["clipped"]["by_lead"] == {"I": 1}
    lines = [json.loads(line) for line in (out / "quality" / "train.jsonl").read_text().splitlines()]
    assert {row["record_id"]: row["flags"] for row in lines} == {"FLAT": {"flat_lead": ["V2"]},
                                                                 "CLIPPED": {"clipped": ["I"]}}


def test_hostile_file_names_stay_data(hostile_run):
    """Record ids come from file names; they end up only as JSON strings and TFRecord bytes, never as
    a path, a shell word or anything evaluated: no file appears outside --output_dir."""
    root, out, _, _, before = hostile_run
    test = read_examples(out, "test")
    assert set(test) == {*HOSTILE_STEMS, NON_UTF8_ID}
    after = _tree(root, root / "out")
    assert after == before, f"files created or removed outside --output_dir: {after ^ before}"
    assert not list(Path("/").glob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    names = {os.path.relpath(os.path.join(p, n), out) for p, _, files in os.walk(out) for n in files}
    assert all(re.fullmatch(r"[\w./-]+", name) for name in names), names  # output names are ours alone


def test_error_budget_exceeded_exits_1_after_publishing(hostile_set, tmp_path, capsys):
    root, expected = hostile_set
    out = tmp_path / "out"
    assert _run(root, out) == EXIT_FAILED  # default --max_error_rate 0.1; about half the training files are bad
    summary = json.loads((out / "run_summary.json").read_text())
    assert (out / "_SUCCESS").exists() and len(read_errors(out, "train")) == len(expected) + 1
    assert summary["error_rate_exceeded"] == ["train"] and summary["max_error_rate"] == 0.1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: error rate above --max_error_rate 0.1: train ") and str(out) in last


def test_reject_flagged_rejects_quality_findings(hostile_set, tmp_path):
    root, expected = hostile_set
    out = tmp_path / "out"
    assert _run(root, out, "--max_error_rate", "1", "--reject_flagged") == EXIT_OK
    rejected = read_errors(out, "train")
    assert rejected["FLAT"] == rejected["CLIPPED"] == Reason.POOR_QUALITY
    assert "FLAT" not in read_examples(out, "train")
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["reconciled"] and summary["quality"]["train"]["records_flagged"] == 2


def test_an_output_dir_holding_the_inputs_is_refused_before_anything_is_touched(hostile_set, capsys):
    """The folder of the hostile set (FIFOs, links out, hostile names) holds TRAIN, TEST and the labels:
    publishing there would have deleted them. Refused before anything is opened, created or moved."""
    root, _ = hostile_set
    before = _tree(root, root / "out")
    assert _run(root, root) == EXIT_CONFIG
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: --output_dir {root} contains --train_dir"), last
    assert _tree(root, root / "out") == before


def test_readme_documents_every_reason_code():
    documented = set(re.findall(r"^\| `(\w+)` \|", README.read_text(), flags=re.MULTILINE))
    codes = {value for name, value in vars(Reason).items() if name.isupper()}
    assert codes <= documented, f"undocumented reason codes: {codes - documented}"
