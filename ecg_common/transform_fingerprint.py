"""Which transform normalized a set of examples, told from the numbers it applies.

Both commands record in `run_summary.json` the 12 per-lead means and standard deviations of the
transform they applied (`lead_statistics`, read back from the transform's graph), and the trainer's
export records those it was trained with (`assets.extra/transform.json`). The same transform always
gives the same numbers, to the last bit, while statistics fitted on other records do not: the 24
numbers are the transform's fingerprint. Shared here because three readers check it: the trainer's
`--extra_data` (a batch of another transform is refused), predict and nightly scoring (a model of
another transform would score meaningless inputs), and reprocessing (a ROOT belongs to one transform).
"""
from __future__ import annotations

import hashlib
import json

LEAD_STATISTICS_KEY = "lead_statistics"
"""`run_summary.json`'s (and `transform.json`'s) record of the statistics the examples were normalized with."""
STATISTICS_FIELDS = ("mean_mv", "std_mv")
"""The numbers that make the fingerprint (a record's `leads` names are not part of it)."""


def same_transform(statistics: dict | None, expected: dict | None) -> bool:
    """Whether two recorded lead statistics are those of one transform: the same 24 numbers, exactly."""
    if statistics is None or expected is None:
        return False
    return all(expected.get(key) is not None and statistics.get(key) == expected[key] for key in STATISTICS_FIELDS)


def fingerprint(statistics: dict) -> str:
    """A short stable name for the transform with these lead statistics: the sha256 of their exact values.

    `json.dumps` writes a float as its shortest round-tripping repr, so two records have the same
    fingerprint exactly when `same_transform` holds for them (the statistics are finite: a run refuses
    others). The ledger stores it so that it need not keep the numbers themselves.
    """
    numbers = [[float(value) for value in statistics[key]] for key in STATISTICS_FIELDS]
    return "sha256:" + hashlib.sha256(json.dumps(numbers).encode("utf-8")).hexdigest()[:16]
