"""Listing a local input tree (`local_inputs.py`, `discovery.py`) and reading a file that is gone."""
from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import hostile_files as hf

from beam_pipeline.graph.counts import TALLY_TAG
from beam_pipeline.graph.read import DecodeRecordFn
from beam_pipeline.inputs import local_files as local_inputs
from beam_pipeline.graph.sources import _PairFn, as_bytes
from beam_pipeline.inputs.discovery import RecordSource, find_records, list_files, pair, record_base
from beam_pipeline.inputs.labels import parse_labels
from ecg_common.rejections import Reason, Rejection
from ecg_common.schema import TEST_SPLIT


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "real").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "X.mat").write_bytes(b"x")
    (root / "A.mat").write_bytes(b"a")
    os.symlink(root / "A.mat", root / "LINK_IN.mat")
    os.symlink(tmp_path / "outside" / "X.mat", root / "LINK_OUT.mat")
    os.symlink(root / "missing.mat", root / "DANGLING.mat")
    os.symlink(tmp_path / "outside", root / "linked_dir")  # a directory link: not walked
    os.mkfifo(root / "PIPE.mat")
    (root / "DIR.mat").mkdir()
    (root / "real" / "B.mat").write_bytes(b"bb")
    return root


def test_walk_lists_every_non_directory_entry_without_following_directory_links(tmp_path):
    root = _tree(tmp_path)
    names = [os.path.relpath(path, root) for path, _ in list_files(str(root))]
    assert names == ["A.mat", "DANGLING.mat", "LINK_IN.mat", "LINK_OUT.mat", "PIPE.mat", "real/B.mat"]
    sizes = dict(list_files(str(root)))
    assert sizes[str(root / "LINK_IN.mat")] == 1 and sizes[str(root / "PIPE.mat")] == 0


def test_refusal_of_each_kind(tmp_path):
    root = _tree(tmp_path)
    verdict = {name: local_inputs.refusal(str(root / name), str(root)) for name in
               ("A.mat", "LINK_IN.mat", "LINK_OUT.mat", "DANGLING.mat", "PIPE.mat", "real/B.mat")}
    assert verdict["A.mat"] is None and verdict["LINK_IN.mat"] is None and verdict["real/B.mat"] is None
    assert verdict["LINK_OUT.mat"][0] == Reason.OUTSIDE_INPUT
    assert verdict["DANGLING.mat"] == (Reason.UNREADABLE, verdict["DANGLING.mat"][1])
    assert verdict["DANGLING.mat"][1].startswith("broken symbolic link")
    assert verdict["PIPE.mat"] == (Reason.UNREADABLE, "a FIFO, not a regular file; not opened")


def test_one_vetting_for_a_whole_listing_judges_each_path_as_on_its_own(tmp_path):
    """`Vetting` resolves each folder once: a file reached through a folder that links outside the
    input is still outside, and its neighbour in a real folder is still fine, in either order."""
    root = _tree(tmp_path)
    (tmp_path / "outside" / "Y.mat").write_bytes(b"y")
    os.symlink(root / "real", root / "linked_in_dir")
    names = ["A.mat", "LINK_IN.mat", "LINK_OUT.mat", "DANGLING.mat", "PIPE.mat", "DIR.mat", "GONE.mat",
             "real/B.mat", "linked_dir/X.mat", "linked_dir/Y.mat", "linked_in_dir/B.mat"]
    for order in (names, names[::-1]):
        vetting = local_inputs.Vetting(str(root))
        verdicts = {name: vetting.refusal(str(root / name)) for name in order}
        assert verdicts == {name: local_inputs.refusal(str(root / name), str(root)) for name in names}
        reasons = {name: verdict and verdict[0] for name, verdict in verdicts.items()}
        assert reasons == {"A.mat": None, "LINK_IN.mat": None, "LINK_OUT.mat": Reason.OUTSIDE_INPUT,
                           "DANGLING.mat": Reason.UNREADABLE, "PIPE.mat": Reason.UNREADABLE,
                           "DIR.mat": Reason.UNREADABLE, "GONE.mat": Reason.UNREADABLE, "real/B.mat": None,
                           "linked_dir/X.mat": Reason.OUTSIDE_INPUT, "linked_dir/Y.mat": Reason.OUTSIDE_INPUT,
                           "linked_in_dir/B.mat": None}
        assert str(tmp_path / "outside" / "Y.mat") in verdicts["linked_dir/Y.mat"][1]


def test_pairing_a_bundle_of_groups_with_one_vetting_judges_each_as_alone(tmp_path):
    """The job pairs one group (record) at a time, one `Vetting` per bundle (`sources._PairFn`): what a
    group after a link out of the input, a linked folder or a vanished file gets must be what pairing
    it on its own gives, in either order of the groups."""
    root = _tree(tmp_path)
    (root / "A.hea").write_text("A 12 500 5000\n")
    os.symlink(root / "real", root / "linked_in_dir")
    (root / "GONE.mat").write_bytes(b"g")
    listing = [(path, size) for path, size in list_files(str(root))]
    (root / "GONE.mat").unlink()  # listed, then removed
    groups: dict[str, list] = {}
    for path, size in listing:
        groups.setdefault(record_base(path), []).append((path, size))
    alone = {base: pair(str(root), TEST_SPLIT, files) for base, files in groups.items()}
    assert {s.record_id: s.rejection and s.rejection.reason for found in alone.values() for s in found} == {
        "A": None, "DANGLING": Reason.UNREADABLE, "GONE": Reason.UNREADABLE, "LINK_IN": None,
        "LINK_OUT": Reason.OUTSIDE_INPUT, "PIPE": Reason.UNREADABLE, "B": None}
    assert [s.header_path for s in alone[record_base(str(root / "A.mat"))]] == [str(root / "A.hea")]
    for order in (list(groups), list(groups)[::-1]):
        fn = _PairFn(str(root), TEST_SPLIT, "token")
        fn.start_bundle()
        paired = [source for base in order for _, source in fn.process((as_bytes(base), [
            (as_bytes(path), size) for path, size in groups[base]]))]
        assert paired == [source for base in order for source in alone[base]]


def test_a_refused_file_does_not_shadow_a_good_one_with_the_same_id(tmp_path):
    root = tmp_path / "in"
    (root / "b").mkdir(parents=True)
    os.mkfifo(root / "SAME.mat")  # first by path
    (root / "b" / "SAME.mat").write_bytes(b"x")
    sources = find_records(str(root), TEST_SPLIT, parse_labels(""))
    assert [(Path(s.path).relative_to(root).as_posix(), s.rejection and s.rejection.reason) for s in sources] == [
        ("SAME.mat", Reason.UNREADABLE), ("b/SAME.mat", None)]


def test_undecodable_file_name_bytes_become_an_escaped_record_id(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / os.fsdecode(b"r\xe9c\xff.mat")).write_bytes(b"x")
    [source] = find_records(str(root), TEST_SPLIT, parse_labels(""))
    assert source.record_id == "r\\xe9c\\xff"
    source.record_id.encode("utf-8")  # what the TFRecord writer does with it


def _run_bundle(fn: DecodeRecordFn, sources: list[RecordSource]) -> list:
    """One bundle through the DoFn as Beam would run it; outputs unwrapped from their windows, its
    counts (the TALLY_TAG outputs of the bundle's end) left out."""
    fn.setup()
    fn.start_bundle()
    outputs = [output for source in sources for output in fn.process(source)] + list(fn.finish_bundle())
    fn.teardown()
    unwrap = lambda value: getattr(value, "value", value)  # noqa: E731 - WindowedValue -> value
    return [beam.pvalue.TaggedOutput(o.tag, unwrap(o.value)) if isinstance(o, beam.pvalue.TaggedOutput) else unwrap(o)
            for o in outputs if getattr(o, "tag", None) != TALLY_TAG]


def test_a_file_gone_before_reading_is_unreadable(tmp_path):
    """As root, permission bits do not stop a read; a file removed between listing and reading does."""
    path = tmp_path / "GONE.mat"
    path.write_bytes(hf.contest(1))
    source = RecordSource(str(path), "GONE", TEST_SPLIT, size_bytes=path.stat().st_size)
    path.unlink()
    [output] = _run_bundle(DecodeRecordFn(500.0, False), [source])
    assert isinstance(output, beam.pvalue.TaggedOutput) and isinstance(output.value, Rejection)
    assert output.value.reason == Reason.UNREADABLE and "FileNotFoundError" in output.value.detail


def test_a_file_that_grew_past_the_limit_after_listing_is_refused_unread(tmp_path, monkeypatch):
    from beam_pipeline.inputs import decoder_requests as requests

    monkeypatch.setattr(requests, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "BIG.mat"
    path.write_bytes(hf.contest(1))  # 240 kB, but listed as 10 bytes
    [output] = _run_bundle(DecodeRecordFn(500.0, False), [RecordSource(str(path), "BIG", TEST_SPLIT, size_bytes=10)])
    assert output.value.reason == Reason.TOO_LARGE
