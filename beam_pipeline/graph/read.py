"""The Beam step that turns a `RecordSource` into a `DecodedRecord` or a `Rejection`.

It only moves file names, bytes and outcomes around: the signal logic lives in `ecg_decode/decoding/` and runs
in a time- and memory-limited child process (`ecg_decode/sandbox/`), which reads local files itself; files on
remote storage (`gs://` and the like) are read here through Beam's `FileSystems` and their bytes
handed to the child (`inputs/decoder_requests.py`). The quality flags (`ecg_decode/decoding/quality.py`) are
computed in the child too, on the whole decoded record. Rejections and quality findings
leave on tagged outputs, so nothing a bad file does can stop the run or vanish silently.
"""
from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from beam_pipeline.graph import progress
from beam_pipeline.graph.counts import TallyingDoFn
from beam_pipeline.graph.arrow_batches import DecodedRecord
from beam_pipeline.graph.settings import Labelling
from beam_pipeline.inputs.classes import bad_dx_code, map_tokens
from beam_pipeline.inputs.decoder_requests import decoder_request
from beam_pipeline.inputs.discovery import RecordSource
from ecg_common.rejections import DecodeError, Reason, Rejection
from ecg_common.schema import CLASSES_KNOWN, DEFAULT_GEOMETRY, TRAIN_SPLIT, UNKNOWN_LABEL, Geometry
from ecg_decode.decoding.quality import QualityFinding
from ecg_decode.decoding.record_info import Decoded, RecordInfo
from ecg_decode.decoding.windows import cut_windows
from ecg_decode.sandbox.parent import DecoderProcess
from ecg_decode.sandbox.pool import pool_for
from ecg_decode.sandbox.protocol import DecodeLimits

CLASS_COUNTER = "class_records/"
"""Multi-label runs: counter `class_records/<split>/<class>`, the records of a split with that class."""
IGNORED_COUNTER = "ignored_code/"
"""Multi-label runs: counter `ignored_code/<split>/<code>`, the records with a code outside every class."""
UNLABELLED_COUNTER = "unlabelled_records/"
"""Multi-label runs: counter `unlabelled_records/<split>`, the records whose classes are not known."""
REJECTED_TAG = "rejected"
QUALITY_TAG = "quality"


def _no_codes(source: RecordSource, tokens: tuple[str, ...] | None, from_header: bool) -> str:
    """What a training record without codes lacks, in the words of its rejection."""
    if not from_header:
        return "no classes in the labels file"
    if source.header_path is None:
        return "no WFDB .hea header (--dx_from_header)"
    return f"{'no' if tokens is None else 'an empty'} '# Dx:' line in {source.header_path}"


def _in_global_window(output):
    """An output of `finish_bundle`, which Beam needs windowed explicitly (all records are in the global window)."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
    return GlobalWindows.windowed_value(output)


class DecodeRecordFn(TallyingDoFn):
    """RecordSource -> DecodedRecords, one per window (main output), or a Rejection (`REJECTED_TAG`
    output), plus a QualityFinding (`QUALITY_TAG` output) for a decoded record that raises a quality
    flag (assessed by the decoder child on the whole decoded record, once); with `reject_flagged` such a record is
    rejected (`poor_quality`) instead of written. With `window_stride_s` the child decodes the whole
    record and its windows are cut here (`ecg_decode/decoding/windows.py`).

    The decoder child works on the next files (up to `parent.RESULT_SLOTS` ahead) while this
    thread takes earlier ones down the rest of their path (windows, batching, transform,
    encoding: Beam runs those inside our `yield`). So a record's outputs may leave while a later
    element is processed; the last ones leave in `finish_bundle`. Each bundle keeps one decoder
    child for itself.

    With `progress_key`, logs the files done (written or rejected) of the files found, the rate and
    the time left (`progress.py`), so a long local run shows how far it is.

    In a multi-label run (`labelling`) a record's classes come from its header's Dx codes or the labels
    file, mapped through the classes (`_classes_of`); `count_classes` counts them and the codes
    ignored (CLASS_COUNTER, IGNORED_COUNTER), on one pass only so a record counts once.
    """

    def __init__(self, default_sampling_rate: float, pad_short: bool, limits: DecodeLimits = DecodeLimits(),
                 reject_flagged: bool = False, assess_quality: bool = True, labelling: Labelling = Labelling(),
                 count_classes: bool = False, geometry: Geometry = DEFAULT_GEOMETRY,
                 window_stride_s: float | None = None, progress_key: progress.ProgressKey | None = None):
        self._progress_key = progress_key
        self._geometry = geometry
        self._window_stride_s = window_stride_s
        self._default_sampling_rate = default_sampling_rate
        self._pad_short = pad_short
        self._limits = limits
        self._reject_flagged = reject_flagged
        self._assess_quality = assess_quality or reject_flagged
        self._labelling = labelling
        self._count_classes = count_classes
        self._decoder: DecoderProcess | None = None
        self._in_flight: collections.deque[RecordSource] = collections.deque()

    def setup(self) -> None:
        self._pool = pool_for(self._limits)

    def start_bundle(self) -> None:
        super().start_bundle()
        self._give_back_decoder()  # still held if the previous bundle failed half-way
        self._decoder = self._pool.acquire()

    def process(self, source: RecordSource):
        request = source.rejection or decoder_request(source)
        if isinstance(request, Rejection):
            yield from self._outputs(source, request)
            return
        data, header = request
        while not self._decoder.has_room(data, header):
            yield from self._collect_oldest()
        self._decoder.submit(data, header, default_sampling_rate=self._default_sampling_rate,
                             pad_short=self._pad_short, geometry=self._geometry,
                             whole_record=self._window_stride_s is not None, assess_quality=self._assess_quality)
        self._in_flight.append(source)

    def finish_bundle(self):
        while self._in_flight:
            for output in self._collect_oldest():
                yield _in_global_window(output)
        self._give_back_decoder()
        yield from super().finish_bundle()

    def teardown(self) -> None:
        self._give_back_decoder()

    def _give_back_decoder(self) -> None:
        self._in_flight.clear()
        if self._decoder is not None:
            self._pool.release(self._decoder)
            self._decoder = None

    def _collect_oldest(self):
        source, result = self._in_flight.popleft(), self._decoder.collect_decoded()
        if isinstance(result, DecodeError):
            result = Rejection(source.record_id, source.path, result.reason, result.detail)
        yield from self._outputs(source, result)

    def _outputs(self, source: RecordSource, outcome: Decoded | Rejection):
        if self._progress_key is not None:
            progress.file_done(self._progress_key)
        label, names = source.label, ()
        if self._labelling.multi_label and not isinstance(outcome, Rejection):
            classes = self._classes_of(source, outcome.info)
            if isinstance(classes, Rejection):
                outcome = classes
            else:
                label, names = classes
        flags = outcome.flags if self._assess_quality and not isinstance(outcome, Rejection) else None
        if flags:
            finding = QualityFinding(source.record_id, source.path, flags)
            yield beam.pvalue.TaggedOutput(QUALITY_TAG, finding)
            if self._reject_flagged:
                outcome = Rejection(source.record_id, source.path, Reason.POOR_QUALITY, finding.describe())
        if isinstance(outcome, Rejection):
            self.count("records_rejected")
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, outcome)
            return
        self.count("records_decoded")
        for window in cut_windows(outcome.ecg, self._geometry, self._window_stride_s):
            yield DecodedRecord(source.record_id, label, window.ecg, outcome.info, names, window.index,
                                window.start_s)

    def _classes_of(self, source: RecordSource, info: RecordInfo) -> tuple[int, tuple[str, ...]] | Rejection:
        """(CLASSES_KNOWN, the record's class names) or (UNKNOWN_LABEL, ()) for a record without codes
        outside the training split; a training record without codes, or a header Dx code that is not a
        positive integer, is rejected."""
        from_header = self._labelling.from_header
        tokens = info.dx_codes if from_header else source.codes
        if from_header and tokens and (bad := bad_dx_code(tokens)) is not None:
            return Rejection(source.record_id, source.path, Reason.BAD_DX_CODE,
                             f"Dx code {bad!r} in {source.header_path} is not a positive integer (SNOMED CT code)")
        if not tokens:
            if source.split != TRAIN_SPLIT:
                self._count(f"{UNLABELLED_COUNTER}{source.split}")
                return UNKNOWN_LABEL, ()
            return Rejection(source.record_id, source.path, Reason.MISSING_LABEL,
                             f"a training record with {_no_codes(source, tokens, from_header)}")
        names, ignored = map_tokens(tokens, self._labelling.classes)
        for name in names:
            self._count(f"{CLASS_COUNTER}{source.split}/{name}")
        for code in ignored:
            self._count(f"{IGNORED_COUNTER}{source.split}/{code}")
        return CLASSES_KNOWN, names

    def _count(self, name: str) -> None:
        """A class count, in the pass that counts classes (the transform pass, not the analysis)."""
        if self._count_classes:
            self.count(name)
