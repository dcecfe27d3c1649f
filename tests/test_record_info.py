"""Record-level metadata (`RecordInfo`: age, sex, Dx codes): parsed from real CinC headers and CPSC
structs, and carried from the decoder child through the parent onto the Beam graph's decoded record."""
from __future__ import annotations

import re

import hostile_files as hf
import numpy as np
import pytest
import scipy.io
from real_recordings import real_ecg_path

from beam_pipeline.graph.arrow_batches import DecodedRecord, DecodedRecordCoder
from beam_pipeline.graph.read import DecodeRecordFn
from beam_pipeline.inputs.discovery import RecordSource
from ecg_common.rejections import DecodeError, Reason
from ecg_decode.decoding.decode import decode_record, decode_with_info
from ecg_decode.decoding.record_info import Decoded, RecordInfo, from_header_comments, from_struct_fields
from ecg_decode.decoding.wfdb_header import parse_header
from ecg_decode.sandbox import child
from ecg_decode.sandbox.parent import DecoderProcess, _Request
from ecg_decode.sandbox.protocol import DecodeLimits, LocalFile

REAL = real_ecg_path()
CINC, CPSC = REAL / "cinc2021", REAL / "cpsc2018"
OPTIONS = dict(default_sampling_rate=500.0, pad_short=False)


def _expected_from_text(text: str) -> RecordInfo:
    """An independent reading of a CinC header's comments: plain regexes on the file's text."""
    age = re.search(r"^#\s*Age:\s*(\S+)", text, re.M)
    sex = re.search(r"^#\s*Sex:\s*(\S+)", text, re.M)
    dx = re.search(r"^#\s*Dx:\s*(.*)$", text, re.M)
    years = float(age[1]) if age and age[1].replace(".", "").isdigit() else None
    return RecordInfo(age=years, sex={"Male": 1, "Female": 0}.get(sex[1]) if sex else None,
                      dx_codes=tuple(code.strip() for code in dx[1].split(",")) if dx else None)


def test_real_cinc_headers_give_their_age_sex_and_dx():
    headers = sorted(CINC.glob("*.hea"))
    assert len(headers) == 50
    infos = {}
    for path in headers:
        text = path.read_text()
        info = from_header_comments(parse_header(text).comments)
        assert info == _expected_from_text(text), path.name
        infos[path.stem] = info
    assert infos["E07500"] == RecordInfo(age=78.0, sex=1, dx_codes=("67741000119109", "426177001"))
    assert sum(info.sex == 0 for info in infos.values()) == 27 and sum(info.sex == 1 for info in infos.values()) == 23
    assert all(info.dx_codes for info in infos.values())


def test_real_cpsc_structs_give_their_age_and_sex():
    for path in sorted(CPSC.glob("*.mat")):
        record = scipy.io.loadmat(path, struct_as_record=True)["ECG"].flat[0]
        expected_age = float(np.asarray(record["age"]).reshape(-1)[0])
        expected_sex = {"Male": 1, "Female": 0}[str(np.asarray(record["sex"]).reshape(-1)[0])]
        result = decode_with_info(path.read_bytes())
        assert isinstance(result, Decoded), path.name
        assert result.info == RecordInfo(age=expected_age, sex=expected_sex, dx_codes=None), path.name
    assert decode_with_info((CPSC / "A1980.mat").read_bytes()).info == RecordInfo(age=52.0, sex=1)


@pytest.mark.parametrize("line", ["Dx: 1,2", "#Dx: 1,2", "# Dx: 1,2", "Dx : 1 , 2", "dx:1,2,", "  #  DX :  1,2  "])
def test_dx_line_spellings(line):
    assert from_header_comments([line]).dx_codes == ("1", "2")


def test_unknown_values_are_none_and_tokens_are_not_validated():
    info = from_header_comments(["Age: NaN", "Sex: Unknown", "Dx: not-a-code, 12x"])
    assert info == RecordInfo(age=None, sex=None, dx_codes=("not-a-code", "12x"))
    assert from_header_comments(["Age: -3", "Sex: F"]) == RecordInfo(age=None, sex=0)
    assert from_header_comments(["Rx: Unknown"]).dx_codes is None  # no Dx line: None, not ()
    assert from_header_comments(["Dx:"]).dx_codes == ()
    assert from_struct_fields(np.array([[np.nan]]), np.array(["Unknown"])) == RecordInfo()
    assert from_struct_fields(np.array([[1, 2]]), np.array([], dtype=object)) == RecordInfo()


def test_records_without_header_or_struct_have_no_info():
    result = decode_with_info(hf.contest(1))
    assert result.info == RecordInfo(age=None, sex=None, dx_codes=None)
    np.testing.assert_array_equal(result.ecg, decode_record(hf.contest(1)))


def test_info_arrives_through_the_sandbox_slots_and_pipe(tmp_path):
    mat, header = CINC / "E07500.mat", CINC / "E07500.hea"
    expected = RecordInfo(age=78.0, sex=1, dx_codes=("67741000119109", "426177001"))
    decoder = DecoderProcess(DecodeLimits())
    try:
        from_bytes = decoder.decode_with_info(mat.read_bytes(), header.read_text(), **OPTIONS)
        assert from_bytes.info == expected
        np.testing.assert_array_equal(from_bytes.ecg, decode_record(mat.read_bytes(), header.read_text()))
        local = decoder.decode_with_info(LocalFile(str(mat), str(header), 1 << 22, 1 << 20), None, **OPTIONS)
        assert local.info == expected
        cpsc = decoder.decode_with_info((CPSC / "A1981.mat").read_bytes(), None, **OPTIONS)
        assert cpsc.info == decode_with_info((CPSC / "A1981.mat").read_bytes()).info and cpsc.info.age is not None
    finally:
        decoder.close()
    # Without shared slots the record travels in the response's payload, its info in the metadata.
    response, payload = child._decode_request({"header": header.read_text(), **OPTIONS}, mat.read_bytes(), None)
    assert RecordInfo.from_json(response["info"]) == expected and len(payload) > 0


def test_the_parent_refuses_malformed_info_from_the_child():
    decoder = DecoderProcess(DecodeLimits())
    ecg = np.zeros((5000, 12), dtype="<f4").tobytes()
    request = _Request([], 0, 0.0, None)
    for bad in [None, "x", {"age": "old"}, {"sex": 2}, {"sex": True}, {"dx_codes": [1]}]:
        result = decoder._result({"shape": [5000, 12], "info": bad}, bytearray(ecg), request)
        assert isinstance(result, DecodeError) and result.reason == Reason.DECODER_CRASHED, bad
    good = decoder._result({"shape": [5000, 12], "info": RecordInfo(1.5, 0, ("a",)).to_json()}, bytearray(ecg),
                           request)
    assert good.info == RecordInfo(1.5, 0, ("a",))


def test_the_decoded_record_carries_info_through_the_dofn_and_its_coder():
    source = RecordSource(str(CINC / "E07501.mat"), "E07501", "train", 1, (CINC / "E07501.mat").stat().st_size,
                          str(CINC / "E07501.hea"), input_root=str(CINC))
    fn = DecodeRecordFn(500.0, False)
    fn.setup()
    fn.start_bundle()
    outputs = list(fn.process(source)) + [value.value for value in fn.finish_bundle()]
    fn.teardown()
    records = [output for output in outputs if isinstance(output, DecodedRecord)]
    assert len(records) == 1
    expected = from_header_comments(parse_header((CINC / "E07501.hea").read_text()).comments)
    assert records[0].info == expected and expected.age is not None
    back = DecodedRecordCoder().decode(DecodedRecordCoder().encode(records[0]))
    assert back.info == expected and back.record_id == "E07501"
    np.testing.assert_array_equal(back.ecg, records[0].ecg)
