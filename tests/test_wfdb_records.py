"""WFDB records (`NAME.hea` + `NAME.dat`): formats 16 and 212 (and 80, 61) written with `wfdb.wrsamp`
read back as `wfdb.rdsamp` reads them, found by discovery beside `.mat` records, decoded in the
sandboxed child from a local folder or from bytes, and hostile headers refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from beam_pipeline.graph.arrow_batches import DecodedRecord
from beam_pipeline.graph.read import DecodeRecordFn
from beam_pipeline.inputs.discovery import find_records
from beam_pipeline.inputs.labels import Labels
from ecg_common.rejections import DecodeError, Reason, Rejection
from ecg_common.schema import LEAD_NAMES, Geometry
from ecg_decode.decoding.decode import decode_wfdb_with_info
from ecg_decode.sandbox.parent import DecoderProcess
from ecg_decode.sandbox.protocol import DecodeLimits, LocalFile, WfdbBytes

OPTIONS = dict(default_sampling_rate=500.0, pad_short=False)


def _write(folder: Path, name: str, fmt: str, seconds: float = 12.0, seed: int = 0, rate: int = 500) -> Path:
    signal = np.random.default_rng(seed).normal(0, 0.4, (int(seconds * rate), 12))
    gain = 50.0 if fmt == "80" else 200.0
    wfdb.wrsamp(name, fs=rate, units=["mV"] * 12, sig_name=list(LEAD_NAMES), p_signal=signal, fmt=[fmt] * 12,
                adc_gain=[gain] * 12, baseline=[3] * 12, comments=["Age: 64", "Sex: Female", "Dx: 426783006"],
                write_dir=str(folder))
    return folder / f"{name}.hea"


def _files(header: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in header.parent.glob(f"{header.stem}*.dat")}


@pytest.mark.parametrize("fmt", ["16", "212", "80"])
def test_wrsamp_records_read_back_as_rdsamp_reads_them(tmp_path, fmt):
    header = _write(tmp_path, f"R{fmt}", fmt)
    expected, _ = wfdb.rdsamp(str(header.with_suffix("")))
    decoded = decode_wfdb_with_info(header.read_text(), _files(header), whole_record=True)
    assert decoded.ecg.shape == expected.shape == (6000, 12)
    np.testing.assert_allclose(decoded.ecg, expected, rtol=1e-6, atol=1e-6)
    assert (decoded.info.age, decoded.info.sex, decoded.info.dx_codes) == (64.0, 0, ("426783006",))
    first = decode_wfdb_with_info(header.read_text(), _files(header))  # one default window: the first 10 s
    np.testing.assert_allclose(first.ecg, expected[:5000], rtol=1e-6, atol=1e-6)


def test_format_61_is_big_endian_16(tmp_path):
    header = _write(tmp_path, "R16", "16")
    data = np.frombuffer(_files(header)["R16.dat"], dtype="<i2").astype(">i2").tobytes()
    text = header.read_text().replace(" 16 ", " 61 ").replace("R16.dat 16", "R61.dat 61").replace("R16", "R61")
    assert " 61 " in text
    from_61 = decode_wfdb_with_info(text, {"R61.dat": data}, whole_record=True)
    np.testing.assert_array_equal(from_61.ecg, decode_wfdb_with_info(header.read_text(), _files(header),
                                                                      whole_record=True).ecg)


def test_a_1000_hz_wfdb_record_with_a_lead_subset(tmp_path):
    header = _write(tmp_path, "FAST", "16", seconds=10, rate=1000)
    expected, _ = wfdb.rdsamp(str(header.with_suffix("")))
    geometry = Geometry(lead_names=("V2", "I"))
    decoded = decode_wfdb_with_info(header.read_text(), _files(header), geometry=geometry)
    import scipy.signal
    np.testing.assert_allclose(decoded.ecg, scipy.signal.resample_poly(expected, 1, 2, axis=0)[:, [7, 0]],
                               rtol=1e-5, atol=1e-5)


def test_hostile_wfdb_headers_are_refused(tmp_path):
    header = _write(tmp_path, "BAD", "16")
    text, files = header.read_text(), _files(header)
    escaping = text.replace("BAD.dat", "../BAD.dat")
    cases = {
        "escaping": (escaping, files, Reason.BAD_HEADER),
        "missing": (text, {}, Reason.UNREADABLE),
        "truncated": (text, {"BAD.dat": files["BAD.dat"][:1000]}, Reason.BAD_HEADER),
        "format 311": (text.replace("BAD.dat 16", "BAD.dat 311"), files, Reason.BAD_HEADER),
        "two samples per frame": (text.replace("BAD.dat 16", "BAD.dat 16x2"), files, Reason.BAD_HEADER),
    }
    for name, (header_text, signal_files, reason) in cases.items():
        result = decode_wfdb_with_info(header_text, signal_files)
        assert isinstance(result, DecodeError) and result.reason == reason, name
    decoder = DecoderProcess(DecodeLimits())
    try:
        (tmp_path / "ESC.hea").write_text(escaping.replace("BAD", "ESC").replace("../ESC", "../BAD"))
        refused = decoder.decode(LocalFile(str(tmp_path / "ESC.hea"), None, 1 << 22, 1 << 20, str(tmp_path)), None,
                                 **OPTIONS)
        assert isinstance(refused, DecodeError) and refused.reason == Reason.BAD_HEADER
    finally:
        decoder.close()


def test_the_sandbox_reads_a_wfdb_record_from_its_folder_and_from_bytes(tmp_path):
    header = _write(tmp_path, "LOCAL", "212", seconds=30)
    expected = decode_wfdb_with_info(header.read_text(), _files(header), whole_record=True)
    decoder = DecoderProcess(DecodeLimits())
    try:
        local = decoder.decode_with_info(LocalFile(str(header), None, 1 << 22, 1 << 20, str(tmp_path)), None,
                                         **OPTIONS, whole_record=True)
        remote = decoder.decode_with_info(WfdbBytes(_files(header)), header.read_text(), **OPTIONS, whole_record=True)
    finally:
        decoder.close()
    np.testing.assert_array_equal(local.ecg, expected.ecg)
    np.testing.assert_array_equal(remote.ecg, expected.ecg)
    assert local.info == remote.info == expected.info


def test_discovery_finds_wfdb_records_beside_mat_records_and_windows_them(tmp_path):
    _write(tmp_path, "W1", "16", seconds=20)
    _write(tmp_path, "W2", "212", seconds=10)
    import hostile_files as hf
    (tmp_path / "M1.mat").write_bytes(hf.cinc_val(1))
    (tmp_path / "M1.hea").write_text(hf.wfdb_header())  # the header of a .mat: not a record of its own
    sources = find_records(str(tmp_path), "test", Labels({}, []))
    assert {s.record_id: (Path(s.path).name, s.header_path and Path(s.header_path).name) for s in sources} == {
        "W1": ("W1.hea", None), "W2": ("W2.hea", None), "M1": ("M1.mat", "M1.hea")}
    fn = DecodeRecordFn(500.0, False, window_stride_s=5.0)
    fn.setup()
    fn.start_bundle()
    outputs = [out for source in sources for out in fn.process(source)] + [v.value for v in fn.finish_bundle()]
    fn.teardown()
    assert not [out for out in outputs if isinstance(out, Rejection)]
    windows = {}
    for out in outputs:
        if isinstance(out, DecodedRecord):
            windows.setdefault(out.record_id, []).append(out.window_index)
    assert windows == {"W1": [0, 1, 2], "W2": [0], "M1": [0]}
