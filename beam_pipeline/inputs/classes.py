"""Multi-label classes: the `--classes` file, how a record's codes become class names, Dx code checks.

The classes file has one class per line: a name, a tab (or spaces), then one or more codes
(comma-separated) that count as that class, e.g. `RBBB<TAB>59118001,713427006`; a line with a single
field is a class named by its code. Blank lines and lines starting with `#` are skipped. A duplicate
name or a code in two classes is a configuration error: either would make a record's classes depend
on the order of the file. The same format, written by the run as `OUT/class_codes.tsv`, tells
reprocessing how training mapped codes.

A record's tokens (Dx codes from its header, or codes and class names from a multi-label labels file)
map to class names: a token that is a code of a class, or the name of a class, is that class; every
other token is ignored (and counted). Without a classes file every token is a class of its own, and
the run learns which to keep (`--min_class_count`, tf.Transform's vocabulary).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable

from ecg_common.rejections import ConfigurationError

_FIELDS = re.compile(r"\s+")
_NAME = re.compile(r"[^\s,;|#]+")
"""A class name or code: no spaces or separators (names are joined by `|` in predictions, codes by `,`)."""
_DX_CODE = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class ClassMap:
    """The classes in output order and which code (or name) means which class."""

    names: tuple[str, ...]
    codes: dict[str, tuple[str, ...]]
    """Each name -> the codes that count as it (the name itself counts too)."""

    @functools.cached_property
    def class_of(self) -> dict[str, str]:
        """Token -> class name, for every code and every name."""
        table = {name: name for name in self.names}
        table.update({code: name for name, codes in self.codes.items() for code in codes})
        return table

    @functools.cached_property
    def position(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    def to_text(self) -> str:
        """The classes file this map was read from (or would be), for `OUT/class_codes.tsv`."""
        return "".join(f"{name}\t{','.join(self.codes.get(name, ()) or (name,))}\n" for name in self.names)


def identity_classes(names: Iterable[str]) -> ClassMap:
    """The classes of a learned vocabulary: each class is named by its one code (or labels-file name)."""
    names = tuple(names)
    return ClassMap(names, {name: (name,) for name in names})


def parse_classes(text: str, source: str = "classes") -> ClassMap:
    """Parses a classes file (see the module docstring); raises ConfigurationError naming the line."""
    names: list[str] = []
    codes: dict[str, tuple[str, ...]] = {}
    owner: dict[str, tuple[str, int]] = {}  # token -> (class, line)
    for number, line in enumerate(text.lstrip("\ufeff").replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source} line {number}"
        fields = _FIELDS.split(line.strip(), maxsplit=1)
        name = fields[0]
        members = tuple(c.strip() for c in fields[1].split(",")) if len(fields) > 1 else (name,)
        for token in (name, *members):
            if not _NAME.fullmatch(token):
                raise ConfigurationError(f"{where}: {token!r} is not a class name or code (expected "
                                         f"'name<TAB>code,code' or 'code', no spaces or ,;|# inside)")
        if name in codes:
            raise ConfigurationError(f"{where}: duplicate class name {name!r} (first on line {owner[name][1]})")
        for token in dict.fromkeys((name, *members)):
            if token in owner and owner[token][0] != name:
                raise ConfigurationError(f"{where}: code {token!r} of class {name!r} is also in class "
                                         f"{owner[token][0]!r} (line {owner[token][1]}): a code counts for one class")
            owner[token] = (name, number)
        names.append(name)
        codes[name] = tuple(dict.fromkeys(members))
    if not names:
        raise ConfigurationError(f"{source}: no class in the classes file")
    return ClassMap(tuple(names), codes)


def read_classes(path: str) -> ClassMap:
    """The classes file at `path` (local or object store); unreadable is a configuration error."""
    from apache_beam.io.filesystems import FileSystems  # lazily: parsing is tested without Beam

    try:
        with FileSystems.open(path) as handle:
            data = handle.read(MAX_CLASSES_BYTES + 1)
    except Exception as error:  # noqa: BLE001 - any failure to read it is a configuration problem
        raise ConfigurationError(f"cannot read classes file {path}: {error}") from None
    if len(data) > MAX_CLASSES_BYTES:
        raise ConfigurationError(f"classes file {path} is larger than {MAX_CLASSES_BYTES} bytes")
    return parse_classes(data.decode("utf-8", errors="replace"), source=path)


MAX_CLASSES_BYTES = 2**20
"""SNOMED CT has some 350,000 concepts; a classes file of a megabyte is already far beyond any use."""


def bad_dx_code(tokens: Iterable[str]) -> str | None:
    """The first Dx token that is not a positive integer (SNOMED CT concept ids are), or None."""
    return next((t for t in tokens if not _DX_CODE.fullmatch(t) or int(t) == 0), None)


def map_tokens(tokens: Iterable[str], classes: ClassMap | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A record's tokens -> (its class names, each once, in class order; the tokens ignored).

    Without `classes` every token is its own class (the vocabulary is still to be learned), each once:
    so the vocabulary counts records, not occurrences."""
    tokens = tuple(dict.fromkeys(t for t in tokens if t))
    if classes is None:
        return tokens, ()
    class_of = classes.class_of
    names = {class_of[t] for t in tokens if t in class_of}
    ignored = tuple(t for t in tokens if t not in class_of)
    return tuple(sorted(names, key=classes.position.__getitem__)), ignored
