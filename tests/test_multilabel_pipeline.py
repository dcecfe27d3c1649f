"""Multi-label runs end to end on the real CinC 2021 records (their headers carry `# Dx:` codes):
`--dx_from_header` with `--classes` (equivalent codes merged) and with a learned vocabulary
(`--min_class_count`), test splits and reprocessed batches mapped with the training classes, and
bad input (a bad Dx code, no Dx line, a bad classes file) as clear errors."""
import collections
import contextlib
import glob
import io
import json
import os
import re
import shutil

import pytest
import tensorflow as tf
import tensorflow_transform as tft

from beam_pipeline.cli.main_command import main
from beam_pipeline.cli.reprocess_command import main as reprocess_main
from ecg_common.cli import EXIT_CONFIG, EXIT_OK
from ecg_common.rejections import Reason
from ecg_common.schema import LABEL_KEY, LABELS_KEY, RECORD_ID_KEY
from test_pipeline import read_errors

CLASSES = ("RBBB\t59118001,713427006\nPAC\t284470004,63593006\nPVC\t427172004,17338001\n"
           "426783006\n427084000\n164934002\n")
TRAIN_RECORDS = 36


def header_codes(hea_path: str) -> list[str] | None:
    """The Dx codes of a header, read here independently of the pipeline's parser."""
    with open(hea_path) as handle:
        for line in handle:
            if (match := re.match(r"#\s*Dx\s*:(.*)", line.strip())) is not None:
                return [c.strip() for c in match[1].split(",") if c.strip()]
    return None


def _copy(real: str, names: list[str], to: str) -> None:
    os.makedirs(to, exist_ok=True)
    for name in names:
        for ext in (".mat", ".hea"):
            shutil.copy(os.path.join(real, name + ext), to)


@pytest.fixture(scope="module")
def cinc(real_ecg_dir, tmp_path_factory):
    """Copies of the real records: the first 36 as train, the rest as test; plus one train record
    with a bad Dx code and one without a Dx line, one test record without a Dx line."""
    real = str(real_ecg_dir / "cinc2021")
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(real, "*.mat")))
    root = tmp_path_factory.mktemp("cinc")
    _copy(real, names[:TRAIN_RECORDS], str(root / "train"))
    _copy(real, names[TRAIN_RECORDS:], str(root / "test"))
    for split, rid, replacement in (("train", "BADDX", "# Dx: 164934002,AF\n"), ("train", "NODX", ""),
                                    ("test", "TNODX", "")):
        text = open(os.path.join(real, names[0] + ".hea")).read().replace(names[0], rid)
        open(root / split / f"{rid}.hea", "w").write(re.sub(r"#\s*Dx.*\n", replacement, text))
        shutil.copy(os.path.join(real, names[0] + ".mat"), root / split / f"{rid}.mat")
    (root / "classes.tsv").write_text(CLASSES)
    return root


def _run(cinc, out, *extra) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--train_dir", str(cinc / "train"), "--test_dir", str(cinc / "test"), "--dx_from_header",
                     "--output_dir", str(out), *extra])
    return code, err.getvalue()


def read_labels(folder: str, out: str) -> dict[str, list[int] | None]:
    """record id -> its `labels` (None when absent), parsed with the transformed feature spec."""
    spec = tft.TFTransformOutput(out).transformed_feature_spec()
    assert spec[LABELS_KEY] == tf.io.VarLenFeature(tf.int64) and LABEL_KEY not in spec
    files = sorted(glob.glob(os.path.join(folder, "part-*.tfrecord.gz")))
    parsed = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.io.parse_single_example(record, spec)
        values = tf.sparse.to_dense(example[LABELS_KEY]).numpy().tolist()
        parsed[example[RECORD_ID_KEY].numpy().decode()] = values or None
    return parsed


def _expected(cinc, split: str, classes: dict[str, str], names: list[str]) -> dict[str, list[int] | None]:
    expected = {}
    for hea in sorted(glob.glob(str(cinc / split / "*.hea"))):
        codes = header_codes(hea)
        if codes is None or "AF" in codes:
            continue
        hit = {classes[c] for c in codes if c in classes}
        expected[os.path.basename(hea)[:-4]] = [int(n in hit) for n in names]
    return expected


@pytest.fixture(scope="module")
def with_classes(cinc, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code, err = _run(cinc, out, "--classes", str(cinc / "classes.tsv"))
    assert code == EXIT_OK, err
    return out


def test_multi_hot_equals_the_header_codes_mapped_through_the_classes(cinc, with_classes):
    names = open(with_classes / "classes.txt").read().split()
    assert names == ["RBBB", "PAC", "PVC", "426783006", "427084000", "164934002"]
    code_to_class = {"59118001": "RBBB", "713427006": "RBBB", "284470004": "PAC", "63593006": "PAC",
                     "427172004": "PVC", "17338001": "PVC", **{n: n for n in names[3:]}}
    train = read_labels(str(with_classes / "train"), str(with_classes))
    assert train == _expected(cinc, "train", code_to_class, names)
    assert sum(1 for v in train.values() if v[1]) >= 5  # PAC, merged from two codes, is common here
    test = read_labels(str(with_classes / "test"), str(with_classes))
    assert test.pop("TNODX") is None  # a test record without a Dx line is unlabelled, and still parses
    assert test == _expected(cinc, "test", code_to_class, names)
    summary = json.load(open(with_classes / "run_summary.json"))
    counts = [sum(v[k] for v in train.values()) for k in range(len(names))]
    assert summary["classes"]["training_records"] == dict(zip(names, counts))
    ignored = collections.Counter(c for hea in glob.glob(str(cinc / "train" / "*.hea"))
                                  for c in set(header_codes(hea) or ()) if c not in code_to_class and c != "AF")
    assert summary["classes"]["ignored_codes"]["train"] == dict(ignored)
    assert summary["class_balance"]["test"]["unlabelled"] == 1
    page = (with_classes / "report" / "index.html").read_text()  # the run report shows the class counts
    assert "RBBB" in page and f"{len(ignored)} codes outside every class" in page


def test_bad_dx_code_and_missing_dx_line_are_rejected_with_reasons(with_classes):
    errors = read_errors(str(with_classes), "train")
    assert errors == {"BADDX": Reason.BAD_DX_CODE, "NODX": Reason.MISSING_LABEL}
    summary = json.load(open(with_classes / "run_summary.json"))
    assert summary["files_found"]["train"] == summary["examples_written"]["train"] + 2 and summary["reconciled"]


def test_learned_vocabulary_equals_a_count_over_train_and_test_and_batches_use_it(cinc, tmp_path):
    out = tmp_path / "out"
    code, err = _run(cinc, out, "--min_class_count", "4")
    assert code == EXIT_OK, err
    counts = collections.Counter(c for hea in glob.glob(str(cinc / "train" / "*.hea"))
                                 for c in set(header_codes(hea) or ()) if "AF" not in (header_codes(hea) or ()))
    names = open(out / "classes.txt").read().split()
    assert sorted(names) == sorted(c for c, n in counts.items() if n >= 4)
    assert len(names) < len(counts)  # the threshold removed the rare codes
    identity = {n: n for n in names}
    assert read_labels(str(out / "train"), str(out)) == _expected(cinc, "train", identity, names)
    test = read_labels(str(out / "test"), str(out))
    test.pop("TNODX")
    assert test == _expected(cinc, "test", identity, names)
    summary = json.load(open(out / "run_summary.json"))
    test_codes = {c for hea in glob.glob(str(cinc / "test" / "*.hea")) for c in header_codes(hea) or ()}
    assert set(summary["classes"]["ignored_codes"]["test"]) == test_codes - set(names)
    # A nightly batch is mapped with the training classes, unknown codes ignored and counted.
    root = tmp_path / "root"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = reprocess_main(["--incoming", str(cinc / "test"), "--transform_dir", str(out), "--output_root",
                               str(root), "--dx_from_header"])
    assert code == EXIT_OK, err.getvalue()
    batch = glob.glob(str(root / "batch-*"))[0]
    nightly = read_labels(os.path.join(batch, "data"), str(out))
    nightly.pop("TNODX")
    assert nightly == _expected(cinc, "test", identity, names)
    assert set(json.load(open(os.path.join(batch, "run_summary.json")))["classes"]["ignored_codes"]["data"]) == (
        test_codes - set(names))


@pytest.mark.parametrize("classes, message", [
    ("AF\t164889003\nAF\t426783006\n", "duplicate class name 'AF'"),
    ("RBBB\t59118001\nCRBBB\t59118001,713427006\n", "code '59118001' of class 'CRBBB' is also in class 'RBBB'"),
])
def test_bad_classes_file_is_a_one_line_configuration_error(cinc, tmp_path, classes, message):
    (tmp_path / "classes.tsv").write_text(classes)
    code, err = _run(cinc, tmp_path / "out", "--classes", str(tmp_path / "classes.tsv"))
    assert code == EXIT_CONFIG and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_count_no_code_reaches_is_a_one_line_configuration_error(cinc, tmp_path):
    code, err = _run(cinc, tmp_path / "out", "--min_class_count", "1000")
    assert code == EXIT_CONFIG and "no class is carried by at least 1000 training records" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_dx_from_header_and_labels_together_is_a_usage_error(cinc, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--train_dir", str(cinc / "train"), "--dx_from_header", "--labels", str(cinc / "classes.tsv"),
              "--output_dir", str(tmp_path / "out")])
    assert exit_.value.code == EXIT_CONFIG and "--dx_from_header" in capsys.readouterr().err
