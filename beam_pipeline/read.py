"""The Beam step that turns a `RecordSource` into a `DecodedRecord` or a `Rejection`.

It only moves bytes and outcomes around: reading goes through Beam `FileSystems` (local paths and
`gs://` alike) and the signal logic lives in `decode.py`. Rejections leave on a tagged output, so
nothing a bad file does can stop the run or vanish silently.
"""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.arrow_batches import DecodedRecord
from beam_pipeline.decode import decode_record
from beam_pipeline.discovery import RecordSource
from beam_pipeline.rejections import DecodeError, Reason, Rejection

REJECTED_TAG = "rejected"
METRICS_NAMESPACE = "ecg_pipeline"
MAX_FILE_BYTES = 256 * 2**20
"""Files larger than this are refused unread: a 10 s, 12-lead ECG is well under 1 MB."""

PROGRESS_INTERVAL_S = 5.0
_log = logging.getLogger(__name__)


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


class DecodeRecordFn(beam.DoFn):
    """RecordSource -> DecodedRecord (main output) or Rejection (`REJECTED_TAG` output).

    Logs progress (records decoded so far and the rate) at most every PROGRESS_INTERVAL_S seconds,
    so a long local run shows it is alive.
    """

    def __init__(self, default_sampling_rate: float, pad_short: bool):
        self._default_sampling_rate = default_sampling_rate
        self._pad_short = pad_short

    def setup(self) -> None:
        self._decoded = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_decoded")
        self._rejected = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_rejected")
        self._count = 0
        self._started = self._last_log = time.monotonic()

    def process(self, source: RecordSource):
        outcome = source.rejection or self._decode(source)
        if isinstance(outcome, Rejection):
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, outcome)
            return
        self._decoded.inc()
        self._report_progress()
        yield DecodedRecord(source.record_id, source.label, outcome)

    def _decode(self, source: RecordSource):
        if source.size_bytes > MAX_FILE_BYTES:
            return Rejection(source.record_id, source.path, Reason.TOO_LARGE,
                             f"{source.size_bytes} bytes; the limit is {MAX_FILE_BYTES}")
        try:
            mat_bytes = _read_bytes(source.path)
            header = _read_bytes(source.header_path).decode("utf-8", "replace") if source.header_path else None
        except (OSError, IOError) as error:  # permissions, vanished file, network storage hiccup
            return Rejection(source.record_id, source.path, Reason.UNREADABLE, f"{type(error).__name__}: {error}")
        result = decode_record(mat_bytes, header, default_sampling_rate=self._default_sampling_rate,
                               pad_short=self._pad_short)
        if isinstance(result, DecodeError):
            return Rejection(source.record_id, source.path, result.reason, result.detail)
        return result

    def _report_progress(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_INTERVAL_S:
            self._last_log = now
            _log.info("decoded %d records (%.1f records/s)", self._count, self._count / (now - self._started))
