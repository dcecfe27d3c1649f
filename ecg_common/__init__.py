"""What the pipeline and the trainer share: the record schema, the output layout's names, record-level
rejections, command-line conventions and the report page helper. Depends on nothing of the project."""
