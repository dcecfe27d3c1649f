"""What the pipeline and the trainer share: the record schema, the output layout's names, record-level
rejections, command-line conventions and the report page helper, and what the trainer's export and its
two readers (trainer.predict, the pipeline's nightly scoring) agree on: the export's layout, the
predictions CSV, the scoring of transformed examples and the transform's fingerprint. Depends on
nothing of the project."""
