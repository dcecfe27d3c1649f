"""Reading WFDB signal files (`NAME.dat`) from bytes in memory: formats 16, 61, 80 and 212.

A WFDB record stored the WFDB way is `NAME.hea` plus the signal file(s) its signal lines name (the
original PTB-XL and MIMIC-IV-ECG: one `NAME.dat`, format 16, 12 signals interleaved sample by
sample). This module turns those bytes into the (samples, signals) integer array that
`standardize` then converts with the header's gains and baselines, exactly as for a CinC `.mat`.

Why our own reader rather than the `wfdb` package: the decoder reads untrusted files inside the
sandboxed child from bytes already read within the size limits (locally by the child itself, or
from `gs://` by the parent through Beam's `FileSystems`); `wfdb.rdsamp` opens files by name (or
fetches from PhysioNet), reads whole files without our limits and pulls pandas into the child. The
formats ECG archives use are a few lines of numpy each; `wfdb` stays a test dependency, used to
write fixtures (`wfdb.wrsamp`) and to check this reader against `wfdb.rdsamp`.

Supported: formats 16 (little-endian int16), 61 (big-endian int16), 80 (8-bit offset binary) and
212 (two 12-bit samples in three bytes), a byte offset (`16+24`), several signals per file
(interleaved) and several files. Refused (`bad_header`): other formats, more than one sample per
frame (`16x2`), skew, and file names with a directory part (a header must not make the decoder
read files elsewhere).
"""
from __future__ import annotations

import math
import re

import numpy as np

from ecg_common.rejections import DecodeError, Reason
from ecg_decode.decoding.container import Signal, too_large
from ecg_decode.decoding.wfdb_header import WfdbHeader

SUPPORTED_FORMATS = ("16", "61", "80", "212")
_FORMAT_FIELD = re.compile(r"^(?P<format>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
_BITS_PER_SAMPLE = {"16": 16, "61": 16, "80": 8, "212": 12}


def _bad(detail: str) -> DecodeError:
    return DecodeError(Reason.BAD_HEADER, detail)


def plain_file_name(name: str) -> bool:
    """A signal file name the decoder may open: a name in the header's own folder, nothing else."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and "\0" not in name


def signal_file_names(header: WfdbHeader) -> list[str] | DecodeError:
    """The distinct signal files a header names, in order; a name with a directory part is refused."""
    names = list(dict.fromkeys(header.file_names))
    bad = [name for name in names if not plain_file_name(name)]
    if bad:
        return _bad(f"signal file {bad[0]!r} is not a plain file name beside the header")
    return names


def _format(field: str, index: int) -> tuple[str, int] | DecodeError:
    match = _FORMAT_FIELD.match(field)
    if match is None:
        return _bad(f"signal {index + 1}: format field {field!r} is not FORMAT[xSAMPLES][:SKEW][+OFFSET]")
    fmt = match["format"]
    if fmt not in SUPPORTED_FORMATS:
        return _bad(f"signal {index + 1}: WFDB format {fmt} is not supported (only {', '.join(SUPPORTED_FORMATS)})")
    if int(match["spf"] or 1) != 1:
        return _bad(f"signal {index + 1}: {match['spf']} samples per frame (multi-frequency) is not supported")
    if int(match["skew"] or 0):
        return _bad(f"signal {index + 1}: skew is not supported")
    return fmt, int(match["offset"] or 0)


def _samples(data: memoryview, fmt: str, count: int) -> np.ndarray:
    """The first `count` samples of a file's stream (all signals interleaved), as int32."""
    if fmt == "16":
        return np.frombuffer(data, dtype="<i2", count=count).astype(np.int32)
    if fmt == "61":
        return np.frombuffer(data, dtype=">i2", count=count).astype(np.int32)
    if fmt == "80":
        return np.frombuffer(data, dtype=np.uint8, count=count).astype(np.int32) - 128
    triplets = np.frombuffer(data, dtype=np.uint8, count=3 * math.ceil(count / 2)).reshape(-1, 3).astype(np.int32)
    first = triplets[:, 0] | ((triplets[:, 1] & 0x0F) << 8)
    second = triplets[:, 2] | ((triplets[:, 1] & 0xF0) << 4)
    pairs = np.stack([first, second], axis=1).reshape(-1)[:count]
    return np.where(pairs >= 2048, pairs - 4096, pairs)  # 12-bit two's complement


def read_signals(header: WfdbHeader, files: dict[str, bytes]) -> Signal | DecodeError:
    """The (samples, signals) integer array of a WFDB record from its signal files' bytes (keyed by
    the names the header gives), signals in header order."""
    if header.num_signals == 0 or len(header.file_names) != header.num_signals:
        return _bad("the header names no signal file")
    names = signal_file_names(header)
    if isinstance(names, DecodeError):
        return names
    columns: dict[int, np.ndarray] = {}
    for name in names:
        rows = [k for k, file_name in enumerate(header.file_names) if file_name == name]
        formats = [_format(header.formats[k], k) for k in rows]
        if bad := next((f for f in formats if isinstance(f, DecodeError)), None):
            return bad
        if len(set(formats)) != 1:
            return _bad(f"signals of {name} have different formats {sorted(set(header.formats[k] for k in rows))}")
        fmt, offset = formats[0]
        if name not in files:
            return DecodeError(Reason.UNREADABLE, f"signal file {name} named by the header is missing")
        data = memoryview(files[name])[offset:]
        available = len(data) * 8 // _BITS_PER_SAMPLE[fmt] // len(rows)
        samples = header.num_samples if header.num_samples is not None else available
        if (refusal := too_large((samples, len(rows)), name)) is not None:
            return refusal
        if samples > available or samples == 0:
            return _bad(f"{name} holds {available} samples per signal, the header declares {samples}")
        stream = _samples(data, fmt, samples * len(rows)).reshape(samples, len(rows))
        for column, row in enumerate(rows):
            columns[row] = stream[:, column]
    source = header.file_names[0]
    return Signal(np.stack([columns[k] for k in range(header.num_signals)], axis=1), source)
