"""Label-file parsing: the separators, headers and encodings people actually send."""
from beam_pipeline.inputs.discovery import find_records, label_file_findings
from beam_pipeline.inputs.labels import parse_labels, read_labels
from ecg_common.rejections import Reason
from ecg_common.schema import TRAIN_SPLIT


def test_contest_format_tab_separated():
    labels = parse_labels("TRAIN101\t0\nTRAIN102\t1\n")
    assert labels.by_id == {"TRAIN101": 0, "TRAIN102": 1}
    assert labels.problems == ()


def test_comma_spaces_header_bom_crlf_and_blank_lines():
    text = "\ufeffRecording,First_label\r\nA1,1\r\n\r\nA2 ,  0\r\nA3   1\r\n  \r\nA4;0\r\n"
    labels = parse_labels(text)
    assert labels.by_id == {"A1": 1, "A2": 0, "A3": 1, "A4": 0}
    assert labels.problems == ()


def test_float_labels_and_extra_columns_are_accepted():
    assert parse_labels("A1,1.0,extra,cols\nA2\t0.0\n").by_id == {"A1": 1, "A2": 0}


def test_values_other_than_0_1_are_problems_not_labels():
    labels = parse_labels("A1\t2\nA2\tyes\nA3\t1\n")
    assert labels.by_id == {"A3": 1}
    assert {(p.record_id, p.reason) for p in labels.problems} == {("A1", Reason.INVALID_LABEL), ("A2", Reason.INVALID_LABEL)}


def test_duplicate_ids_same_value_kept_conflicting_rejected():
    labels = parse_labels("A1\t1\nA1\t1\nA2\t0\nA2\t1\n")
    assert labels.by_id == {"A1": 1}
    assert labels.problem_for("A2").reason == Reason.INVALID_LABEL
    assert "conflicting" in labels.problem_for("A2").detail


def test_line_without_label_is_a_problem():
    labels = parse_labels("A1\nA2\t0\n")
    assert labels.by_id == {"A2": 0}
    assert labels.problem_for("A1").reason == Reason.INVALID_LABEL


def test_header_only_recognised_on_first_line():
    labels = parse_labels("id\tlabel\nA1\t1\nname\tlabel\n")
    assert labels.by_id == {"A1": 1}
    assert labels.problem_for("name").reason == Reason.INVALID_LABEL


# --- Label files that explain (issue 16) and a header known by its words (issue 17) ---

CPSC_HEADER = "Recording,First_label,Second_label,Third_label"


def test_class_names_are_counted_by_what_is_wrong_with_them():
    text = "A0001\tAF\nA0002\tNormal\nA0003\tAF\nA0004\nA0005\tI-AVB\nA0006\tSTD\n"
    labels = parse_labels(text)
    assert labels.by_id == {}
    assert [(p.record_id, p.line) for p in labels.problems] == [
        ("A0001", 1), ("A0002", 2), ("A0003", 3), ("A0004", 4), ("A0005", 5), ("A0006", 6)]
    summary = labels.problem_summary()
    assert summary.startswith("6 unusable lines: 5 with a label that is not 0 or 1 ('AF', 'Normal', 'I-AVB', "
                              "...), 1 without a label ('A0004')")
    assert "--normal_labels" in summary
    assert labels.problem_note() == f"; {summary}"
    assert parse_labels("A1\t1\n").problem_note() == ""


def test_line_numbers_are_the_file_lines_blank_ones_included():
    labels = parse_labels("A0\t0\r\n\r\nA1\tx\r\n\nA2\t1\n")
    assert labels.problem_for("A1").line == 3
    assert "line 3: label 'x' is not 0 or 1" in labels.problem_for("A1").detail


def test_a_header_is_recognised_by_its_words_not_by_failing_to_parse():
    labels = parse_labels("ID\tTrue\nA1\t1\n")
    assert labels.by_id == {"A1": 1}
    assert labels.problem_for("ID").reason == Reason.INVALID_LABEL
    assert "label 'True' is not 0 or 1" in labels.problem_for("ID").detail
    unknown_words = parse_labels("ecg\toutcome\nA1\t0\n")
    assert unknown_words.problem_for("ecg").line == 1, "a first line of data is never skipped silently"
    for header in (CPSC_HEADER, "id\tlabel", "Filename;Class", "record_id y", "PATIENT,Diagnosis,comment", "file\tdx"):
        labels = parse_labels(f"\n{header}\nA1,1\n")
        assert (labels.by_id, labels.problems) == ({"A1": 1}, ()), header


def test_cpsc_reference_csv_with_normal_labels():
    text = f"\ufeff{CPSC_HEADER}\r\nA1,1,,\r\nA2,6,1,\r\nA3,2,3,9\r\nA4,1.0,,\r\n"
    labels = parse_labels(text, normal_labels=["1"])
    assert labels.by_id == {"A1": 0, "A2": 1, "A3": 1, "A4": 0}, "1 is normal; a 1 in Second_label is ignored"
    assert labels.problems == ()
    assert labels.describe_mapping() == "normal: '1' (1 line), '1.0' (1 line); abnormal: '2' (1 line), '6' (1 line)"
    read_as_binary = parse_labels(text)
    assert read_as_binary.by_id == {"A1": 1, "A4": 1}, "without --normal_labels class 1 is a valid binary label"
    assert {p.record_id for p in read_as_binary.problems} == {"A2", "A3"}


def test_normal_labels_compare_names_without_case_and_numbers_by_value():
    labels = parse_labels("A1\tNormal\nA2\tAF\nA3\tNORMAL\nA4\tSR\nA5\t0\n", normal_labels=["normal", "sr"])
    assert labels.by_id == {"A1": 0, "A2": 1, "A3": 0, "A4": 0, "A5": 1}
    assert parse_labels("A1\t01\nA2\t1e0\nA3\t10\n", normal_labels=["1"]).by_id == {"A1": 0, "A2": 0, "A3": 1}


def test_with_normal_labels_a_line_without_label_is_still_unusable():
    labels = parse_labels(f"{CPSC_HEADER}\nA1,,3,\nA2,1,,\n", normal_labels=["1"])
    assert labels.by_id == {"A2": 0}, "an empty First_label is not replaced by the Second_label"
    assert labels.problem_for("A1").line == 2 and "expected 'id<TAB>label'" in labels.problem_for("A1").detail
    assert "--normal_labels" not in labels.problem_summary()


def test_columns_aligned_with_several_tabs_or_spaces_still_parse():
    assert parse_labels("A1\t\t1\nA22  \t0\n").by_id == {"A1": 1, "A22": 0}


def test_every_line_of_a_conflicting_id_is_reported_with_its_number():
    labels = parse_labels("A2\t0\nA1\t1\nA2\t1\n")
    assert labels.by_id == {"A1": 1}
    assert [(p.record_id, p.line) for p in labels.problems] == [("A2", 1), ("A2", 3)]
    assert "'0' on line 1, '1' on line 3" in labels.problems[1].detail
    assert labels.problem_summary() == "2 unusable lines: 2 giving an id conflicting labels ('A2')"


def test_a_line_without_an_id_is_a_problem():
    labels = parse_labels(",1\nA2\t0\n")
    assert labels.by_id == {"A2": 0}
    assert [(p.record_id, p.line, p.kind) for p in labels.problems] == [("", 1, "without a record id")]


def test_every_unusable_line_is_a_labels_finding_also_when_its_record_is_rejected(tmp_path):
    (tmp_path / "TRAIN").mkdir()
    for rid in ("A1", "A2", "A3"):
        (tmp_path / "TRAIN" / f"{rid}.mat").write_bytes(b"x")
    labels = parse_labels("A1\t1\nA2\tAF\nA3\t0\nA3\t1\nGHOST\t0\n", source="labels.txt")
    sources = find_records(str(tmp_path / "TRAIN"), TRAIN_SPLIT, labels)
    assert {s.record_id: s.rejection and s.rejection.reason for s in sources} == {
        "A1": None, "A2": Reason.INVALID_LABEL, "A3": Reason.INVALID_LABEL}
    findings = label_file_findings(labels, sources, "labels.txt")
    assert [(f.record_id, f.reason, f.detail.split(":")[0]) for f in findings] == [
        ("GHOST", Reason.LABEL_WITHOUT_FILE, "labelled record has no .mat file"),
        ("A2", Reason.INVALID_LABEL, "labels.txt line 2"),
        ("A3", Reason.INVALID_LABEL, "labels.txt line 3"),
        ("A3", Reason.INVALID_LABEL, "labels.txt line 4")]


def test_unusable_lines_are_summarised_as_one_warning(tmp_path, caplog):
    path = tmp_path / "labels.txt"
    path.write_text("A1\t1\nA2\tAF\nA3\tN\n")
    with caplog.at_level("WARNING", logger="beam_pipeline.inputs.labels"):
        labels = read_labels(str(path))
    assert labels.by_id == {"A1": 1}
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert str(path) in warning.getMessage()
    assert "2 unusable lines: 2 with a label that is not 0 or 1 ('AF', 'N')" in warning.getMessage()


def test_read_labels_maps_class_values(tmp_path, caplog):
    path = tmp_path / "REFERENCE.csv"
    path.write_text(f"{CPSC_HEADER}\nA1,1,,\nA2,7,,\n")
    with caplog.at_level("INFO", logger="beam_pipeline.inputs.labels"):
        assert read_labels(str(path), normal_labels=("1",)).by_id == {"A1": 0, "A2": 1}
    assert any("normal: '1' (1 line); abnormal: '7' (1 line)" in m for m in caplog.messages)
