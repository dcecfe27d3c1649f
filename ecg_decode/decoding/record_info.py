"""What a record says about its patient and diagnosis besides the signal: age, sex and the `Dx` codes.

PhysioNet/CinC headers keep them in comment lines (`# Age: 70`, `# Sex: Male`,
`# Dx: 284470004,164934002`); the original CPSC 2018 struct in its `age` and `sex` fields. They are
read here once, in the decoder child, and travel to the parent as JSON in the result frame
(`to_json` / `from_json`), then on the decoded record through the Beam graph.

Nothing here rejects a record: an age or sex that cannot be read is unknown (None), as it is in
many real headers (`Age: NaN`, `Sex: Unknown`). The Dx tokens are passed on as written (stripped),
unvalidated: the multi-label classes decide which codes they know.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Iterable

import numpy as np

MAX_AGE_YEARS = 150.0
"""An age beyond this (or below 0) is not a person's age in years: treated as unknown."""

MAX_DX_CODES = 256
"""More Dx tokens than this are not a diagnosis list; only the first ones are kept (bounds the JSON frame)."""

MAX_TOKEN_CHARS = 64
"""A longer Dx token is cut to this length (a hostile header must not grow the result frame)."""

FEMALE, MALE = 0, 1
_SEX_WORDS = {"female": FEMALE, "f": FEMALE, "woman": FEMALE, "male": MALE, "m": MALE, "man": MALE}
_COMMENT_FIELD = re.compile(r"^\s*#?\s*(?P<key>[A-Za-z]+)\s*:\s*(?P<value>.*)$")


@dataclasses.dataclass(frozen=True)
class RecordInfo:
    """Record-level metadata: `age` in years, `sex` (0 female, 1 male), the raw `dx_codes`; None = unknown."""

    age: float | None = None
    sex: int | None = None
    dx_codes: tuple[str, ...] | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict (what the decoder child sends in its result frame)."""
        return {"age": self.age, "sex": self.sex, "dx_codes": None if self.dx_codes is None else list(self.dx_codes)}

    @classmethod
    def from_json(cls, value: object) -> "RecordInfo | None":
        """The inverse of `to_json`, or None when `value` is not one (a child that misbehaves)."""
        if not isinstance(value, dict):
            return None
        age, sex, codes = value.get("age"), value.get("sex"), value.get("dx_codes")
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float))):
            return None
        if sex not in (None, FEMALE, MALE) or isinstance(sex, bool):
            return None
        if codes is not None and not (isinstance(codes, list) and all(isinstance(code, str) for code in codes)):
            return None
        return cls(age=_age(age), sex=sex, dx_codes=None if codes is None else tuple(codes))


class Decoded(typing.NamedTuple):
    """A decoded record: the standardized signal in mV, its `RecordInfo` and, when the decoder child
    was asked for them, its quality flags (`quality.assess`: flag -> lead names; empty when none).
    Here rather than in `decode.py` so the sandbox's parent side can name it without importing the parsers."""

    ecg: np.ndarray
    info: RecordInfo
    flags: dict[str, tuple[str, ...]] | None = None


def _age(value: object) -> float | None:
    """Years as a float, or None when `value` is not a plausible age (NaN, negative, text, > 150)."""
    try:
        years = float(value)
    except (TypeError, ValueError):
        return None
    return years if math.isfinite(years) and 0.0 <= years <= MAX_AGE_YEARS else None


def _sex(value: object) -> int | None:
    """0 for female, 1 for male, None for anything else (`Unknown`, empty, garbage)."""
    return _SEX_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None


def _dx_codes(value: str) -> tuple[str, ...]:
    """The comma-separated tokens of a Dx line, stripped, empty ones dropped, bounded in count and length."""
    tokens = (token.strip()[:MAX_TOKEN_CHARS] for token in value.split(","))
    return tuple(token for token in tokens if token)[:MAX_DX_CODES]


def from_header_comments(comments: Iterable[str]) -> RecordInfo:
    """RecordInfo from a WFDB header's comment lines (`WfdbHeader.comments`, with or without the `#`).

    Accepts `Age: 70`, `#Age:70`, `Age : 70`, keys in any case; the first line of each key counts.
    `dx_codes` is None when no Dx line is present (an empty Dx line gives an empty tuple).
    """
    fields: dict[str, str] = {}
    for line in comments:
        match = _COMMENT_FIELD.match(line)
        if match is not None:
            fields.setdefault(match["key"].lower(), match["value"].strip())
    dx = fields.get("dx")
    return RecordInfo(age=_age(fields["age"]) if "age" in fields else None,
                      sex=_sex(fields.get("sex")),
                      dx_codes=None if dx is None else _dx_codes(dx))


def from_struct_fields(age: object, sex: object) -> RecordInfo:
    """RecordInfo from the CPSC 2018 struct's `age` and `sex` fields as scipy loads them (nested
    arrays such as `array([[52]], dtype=uint8)` and `array(['Male'])`); unreadable ones are None."""
    return RecordInfo(age=_age(_scalar(age)), sex=_sex(_scalar(sex)))


def _scalar(value: object) -> object:
    """The single value inside scipy's nested object/number arrays, or None when there is not exactly one."""
    for _ in range(8):  # scipy nests a few levels at most; the bound keeps a crafted struct cheap
        if isinstance(value, np.ndarray):
            if value.size != 1:
                return None
            value = value.reshape(-1)[0]
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value
    return None
