"""Age and sex of the records written, counted where examples are encoded (one count per record: its
window 0), as Beam counters the run summary and the report read back. No TensorFlow here."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ecg_common.schema import AGE_KEY, SEX_KEY, WINDOW_INDEX_KEY

AGE_BINS = ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+")
"""Age in decades (years); a record without an age counts as `unknown`."""
UNKNOWN = "unknown"
SEXES = ("female", "male")
"""Index = the `sex` feature's value (0 female, 1 male)."""


def counter_names(split: str) -> list[str]:
    return [f"{split}_age_{name}" for name in (*AGE_BINS, UNKNOWN)] + [f"{split}_sex_{name}" for name in
                                                                      (*SEXES, UNKNOWN)]


def _optional_values(batch: pa.RecordBatch, key: str, rows: np.ndarray) -> list[float | None]:
    """The single value of `key` in each selected row, None where the row has none (or no such column)."""
    index = batch.schema.get_field_index(key)
    if index < 0:
        return [None] * len(rows)
    values = batch.column(index).to_pylist()
    return [value[0] if value else None for value in (values[row] for row in rows)]


def count_batch(batch: pa.RecordBatch, split: str) -> dict[str, int]:
    """Counter name -> count for the records whose first window is in `batch`."""
    index = batch.schema.get_field_index(WINDOW_INDEX_KEY)
    windows = (batch.column(index).flatten().to_numpy(zero_copy_only=False) if index >= 0
               else np.zeros(batch.num_rows, np.int64))
    rows = np.flatnonzero(windows == 0)
    counts: dict[str, int] = {}
    for age in _optional_values(batch, AGE_KEY, rows):
        name = UNKNOWN if age is None else AGE_BINS[min(int(age // 10), len(AGE_BINS) - 1)]
        counts[f"{split}_age_{name}"] = counts.get(f"{split}_age_{name}", 0) + 1
    for sex in _optional_values(batch, SEX_KEY, rows):
        name = SEXES[int(sex)] if sex in (0, 1) else UNKNOWN
        counts[f"{split}_sex_{name}"] = counts.get(f"{split}_sex_{name}", 0) + 1
    return counts


def summarize(read_counter: Callable[[str], int], split: str) -> dict:
    """run_summary.json's `demographics[split]`: records written per age bin and per sex."""
    return {"age_years": {name: read_counter(f"{split}_age_{name}") for name in (*AGE_BINS, UNKNOWN)},
            "sex": {name: read_counter(f"{split}_sex_{name}") for name in (*SEXES, UNKNOWN)}}
