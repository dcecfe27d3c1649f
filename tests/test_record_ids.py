"""Record ids from file names on disk: ordinary names keep their stem as id, and two different names that
give one id (bytes that are not UTF-8 against their literal `\\xNN` spelling) are a `duplicate_id` that
names both files, never two records silently sharing an id."""
from __future__ import annotations

import os

from beam_pipeline.inputs.discovery import find_records, label_file_findings
from beam_pipeline.inputs.labels import parse_labels
from ecg_common.rejections import Reason
from ecg_common.schema import TRAIN_SPLIT

LATIN1_NAME = b"caf\xe9.mat"       # the byte 0xE9 alone is not UTF-8
LITERAL_NAME = b"caf\\xe9.mat"     # a real backslash, x, e, 9: the spelling of the id above


def _write(folder, name: bytes) -> bytes:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as handle:
        handle.write(b"x")
    return path


def test_a_non_utf8_name_and_its_literal_spelling_are_not_one_record(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    latin1, literal = _write(folder, LATIN1_NAME), _write(folder, LITERAL_NAME)
    assert len(os.listdir(os.fsencode(folder))) == 2, "two distinct files on disk"
    labels = parse_labels("caf\\xe9\t1\n")
    sources = find_records(str(folder), TRAIN_SPLIT, labels)
    kept = [s for s in sources if s.rejection is None]
    [duplicate] = [s for s in sources if s.rejection is not None]
    assert [os.fsencode(s.path) for s in kept] == [literal], "first by path kept"
    assert os.fsencode(duplicate.path) == latin1 and duplicate.rejection.reason == Reason.DUPLICATE_ID
    detail = duplicate.rejection.detail
    assert repr(latin1) in detail and repr(literal) in detail, f"both files named, distinguishably: {detail}"
    assert label_file_findings(labels, sources, "labels.txt") == []


def test_ordinary_names_keep_their_stem_as_id_and_can_be_labelled(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = {"A1980": "A1980.mat", "café": "café.mat", "back\\slash": "back\\slash.mat", "x\\xe9": "x\\xe9.mat",
             "caf\\xe9": os.fsdecode(LATIN1_NAME)}
    for name in names.values():
        _write(folder, os.fsencode(name))
    labels = parse_labels("".join(f"{rid}\t{k % 2}\n" for k, rid in enumerate(names)))
    sources = find_records(str(folder), TRAIN_SPLIT, labels)
    assert all(s.rejection is None for s in sources), [s.rejection for s in sources]
    assert {s.record_id: s.label for s in sources} == {rid: k % 2 for k, rid in enumerate(names)}
