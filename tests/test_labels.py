"""Label-file parsing: the separators, headers and encodings people actually send."""
from beam_pipeline.inputs.labels import parse_labels
from ecg_common.rejections import Reason


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
