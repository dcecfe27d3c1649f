"""Which of the files found became examples.

A run records every rejected file (`errors/<split>.jsonl`) and every flagged one (`quality/<split>.jsonl`)
with its path, but not the written ones: a written example is a found source that was not rejected at
discovery and has no line in `errors/`. Files are matched by path, not by record id, because a
`duplicate_id` rejection carries the id of the file that was kept.
"""
from __future__ import annotations

import json

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.discovery import RecordSource
from ecg_common.layout import ERRORS_DIR, QUALITY_DIR

def _paths_in(out_dir: str, folder: str, split: str) -> set[str]:
    """The `path` of every line of `out_dir/folder/<split>.jsonl` (empty when the file does not exist)."""
    path = FileSystems.join(out_dir, folder, f"{split}.jsonl")
    if not FileSystems.exists(path):
        return set()
    with FileSystems.open(path) as handle:
        return {json.loads(line)["path"] for line in handle.read().decode("utf-8").splitlines() if line}


def written_sources(sources: list[RecordSource], out_dir: str, split: str) -> list[RecordSource]:
    """The sources of `split` that are examples in `out_dir`, in discovery order (sorted by path)."""
    rejected = _paths_in(out_dir, ERRORS_DIR, split)
    return [s for s in sources if s.rejection is None and s.path not in rejected]


def flagged_paths(out_dir: str, split: str) -> set[str]:
    """Paths of the records of `split` that raised a signal-quality flag."""
    return _paths_in(out_dir, QUALITY_DIR, split)
