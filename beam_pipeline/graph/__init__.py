"""The Beam graph: wiring (`pipeline.py`), the decode DoFn, Arrow batches, the preprocessing_fn, the encoder
and GZIP sink, the learned statistics and the drift moments."""
