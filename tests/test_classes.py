"""The --classes file, the mapping of a record's codes to classes, Dx code checks and the
multi-label labels-file format."""
import pytest

from beam_pipeline.inputs.classes import bad_dx_code, identity_classes, map_tokens, parse_classes
from beam_pipeline.inputs.labels import parse_labels
from ecg_common.rejections import ConfigurationError, Reason
from ecg_common.schema import CLASSES_KNOWN

CLASSES = "RBBB\t59118001,713427006\nPAC\t284470004, 63593006\n\n# comment\n164889003\n"


def test_classes_file_names_codes_and_single_field_classes():
    classes = parse_classes(CLASSES)
    assert classes.names == ("RBBB", "PAC", "164889003")
    assert classes.codes["RBBB"] == ("59118001", "713427006")
    assert classes.codes["164889003"] == ("164889003",)
    assert parse_classes(classes.to_text()) == classes  # OUT/class_codes.tsv reads back the same


def test_equivalent_codes_merge_and_unknown_codes_are_ignored_in_class_order():
    classes = parse_classes(CLASSES)
    assert map_tokens(["713427006", "164889003", "59118001", "999", "63593006"], classes) == (
        ("RBBB", "PAC", "164889003"), ("999",))
    assert map_tokens(["PAC", "RBBB"], classes) == (("RBBB", "PAC"), ())  # names count as their class
    assert map_tokens(["1", "2", "1"], None) == (("1", "2"), ())  # learning: each token once per record
    assert map_tokens(["a", "b"], identity_classes(["b"])) == (("b",), ("a",))


@pytest.mark.parametrize("text, message", [
    ("AF\t164889003\nAF\t426783006\n", "duplicate class name 'AF'"),
    ("RBBB\t59118001\nCRBBB\t59118001,713427006\n", "code '59118001' of class 'CRBBB' is also in class 'RBBB'"),
    ("164889003\nAF\t164889003\n", "also in class '164889003'"),
    ("AF|x\t1\n", "is not a class name or code"),
    ("\n# nothing\n", "no class"),
])
def test_bad_classes_file_is_a_configuration_error_naming_the_line(text, message):
    with pytest.raises(ConfigurationError, match=message.replace("|", r"\|")):
        parse_classes(text)


def test_dx_codes_must_be_positive_integers():
    assert bad_dx_code(["164889003", "59118001"]) is None
    assert bad_dx_code(["164889003", "AF"]) == "AF"
    assert bad_dx_code(["0"]) == "0" and bad_dx_code(["-5"]) == "-5" and bad_dx_code(["1.5"]) == "1.5"


def test_multi_label_labels_file_every_field_after_the_id_is_a_class():
    text = ("Recording,First_label,Second_label,Third_label\nA1,AF,RBBB,\nA2\t164889003;59118001\n"
            "A3 PAC\nA3 PAC\nA4,AF\nA4,RBBB\nA5\n")
    labels = parse_labels(text, multi_label=True)
    assert labels.codes == {"A1": ("AF", "RBBB"), "A2": ("164889003", "59118001"), "A3": ("PAC",)}
    assert labels.by_id == dict.fromkeys(labels.codes, CLASSES_KNOWN)
    assert {(p.record_id, p.reason) for p in labels.problems} == {("A4", Reason.INVALID_LABEL),
                                                                  ("A5", Reason.INVALID_LABEL)}
    assert parse_labels("A1\t1\n").by_id == {"A1": 1} and not parse_labels("A1\t1\n").codes  # binary unchanged
