"""Where the time goes: the cost of each step of a record's path, measured one at a time.

Runs each step over the same records in one thread and prints milliseconds per record, so the
table in docs/performance.md can be reproduced and compared with the pipeline's
wall time. Usage: python bench/stage_costs.py TRAIN_DIR TRANSFORM_OUTPUT_DIR [--records 300]
(TRANSFORM_OUTPUT_DIR: any earlier pipeline output, for its transform graph.)
"""
from __future__ import annotations

import argparse
import glob
import os
import time
import zlib

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from isal import isal_zlib
from tfx_bsl.public import tfxio

from beam_pipeline.graph.arrow_batches import DecodedRecord, to_record_batch
from beam_pipeline.graph.tfrecord_sink import DEFAULT_GZIP_LEVEL
from ecg_common.schema import ECG_KEY, LABEL_KEY, RECORD_ID_KEY, SAMPLING_RATE_HZ
from ecg_decode.decoding.decode import decode_record
from ecg_decode.decoding.quality import assess
from ecg_decode.file_limits import MAX_FILE_BYTES, MAX_HEADER_BYTES
from ecg_decode.sandbox.parent import DecoderProcess
from ecg_decode.sandbox.protocol import DecodeLimits, LocalFile

BATCH = 32


def _per_record_ms(step, items, count: int) -> float:
    started = time.perf_counter()
    for item in items:
        step(item)
    return (time.perf_counter() - started) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_dir")
    parser.add_argument("transform_output_dir")
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.train_dir, "**", "*.mat"), recursive=True))[: args.records]
    n = len(paths)
    rows: list[tuple[str, float]] = []
    blobs = [open(p, "rb").read() for p in paths]
    rows.append(("read file bytes", _per_record_ms(lambda p: open(p, "rb").read(), paths, n)))
    rows.append(("decode in-process (loadmat, checks)", _per_record_ms(decode_record, blobs, n)))
    child = DecoderProcess(DecodeLimits())
    child.decode(blobs[0], None, default_sampling_rate=SAMPLING_RATE_HZ, pad_short=False)  # start-up not counted
    rows.append(("decode in the isolated child, bytes sent (remote files)", _per_record_ms(
        lambda b: child.decode(b, None, default_sampling_rate=SAMPLING_RATE_HZ, pad_short=False), blobs, n)))
    local = [LocalFile(p, None, MAX_FILE_BYTES, MAX_HEADER_BYTES) for p in paths]
    rows.append(("decode in the isolated child, which reads the file", _per_record_ms(
        lambda f: child.decode(f, None, default_sampling_rate=SAMPLING_RATE_HZ, pad_short=False), local, n)))

    def queued(files) -> None:  # as the pipeline does: the child works ahead, up to its result slots
        for f in files:
            while not child.has_room(f, None):
                child.collect()
            child.submit(f, None, default_sampling_rate=SAMPLING_RATE_HZ, pad_short=False)
        while child.pending:
            child.collect()

    rows.append(("  the same, requests queued (the caller's share)", _per_record_ms(queued, [local], n)))
    child.close()
    ecgs = [decode_record(b) for b in blobs]
    rows.append(("signal-quality flags", _per_record_ms(assess, ecgs, n)))
    records = [DecodedRecord(f"R{i}", i % 2, e) for i, e in enumerate(ecgs)]
    chunks = [records[i:i + BATCH] for i in range(0, n, BATCH)]
    rows.append(("Arrow record batch", _per_record_ms(to_record_batch, chunks, n)))
    tft_output = tft.TFTransformOutput(args.transform_output_dir)
    layer = tft_output.transform_features_layer()

    def transform(chunk):
        return layer({ECG_KEY: tf.constant(np.stack([r.ecg for r in chunk])),
                      LABEL_KEY: tf.constant([r.label for r in chunk], tf.int64),
                      RECORD_ID_KEY: tf.constant([r.record_id for r in chunk])})

    transform(chunks[0])  # tracing not counted
    outputs = [transform(c) for c in chunks]
    rows.append(("tf.Transform apply (batches of 32)", _per_record_ms(transform, chunks, n)))
    batches = [to_record_batch([DecodedRecord(r.record_id, r.label, o) for r, o in zip(c, out[ECG_KEY].numpy())])
               for c, out in zip(chunks, outputs)]
    encoder = tfxio.RecordBatchToExamplesEncoder(tft_output.transformed_metadata.schema)
    rows.append(("tf.Example encoding (tfx_bsl C++)", _per_record_ms(encoder.encode, batches, n)))
    examples = [e for b in batches for e in encoder.encode(b)]
    rows.append((f"GZIP, ISA-L level {DEFAULT_GZIP_LEVEL} (the pipeline)",
                 _per_record_ms(lambda e: isal_zlib.compress(e, DEFAULT_GZIP_LEVEL), examples, n)))
    rows.append(("GZIP, zlib level 6 (Beam's WriteToTFRecord)", _per_record_ms(lambda e: zlib.compress(e, 6), examples, n)))
    ratio_isal = sum(len(isal_zlib.compress(e, DEFAULT_GZIP_LEVEL)) for e in examples) / sum(map(len, examples))
    ratio_zlib = sum(len(zlib.compress(e, 6)) for e in examples) / sum(map(len, examples))
    print(f"{n} records from {args.train_dir}; ms per record, one thread")
    for name, ms in rows:
        print(f"  {name:56s} {ms:7.2f}")
    print(f"  compressed/raw size: ISA-L {ratio_isal:.3f}, zlib {ratio_zlib:.3f}")


if __name__ == "__main__":
    main()
