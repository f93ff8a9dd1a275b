"""Parsing of dataset specs: `NAME_OR_PATH[:key=value[,key=value...]]`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from training.data.errors import DataError

ALLOWED_OPTIONS: tuple[str, ...] = ("holdout", "label")

# Only a tail made entirely of key=value pairs counts as options, so a path that happens to
# contain ':' (a Windows drive, a timestamped folder) is still read as a path.
_OPTIONS_TAIL = re.compile(r"^[A-Za-z_][\w-]*=[^,=]*(,[A-Za-z_][\w-]*=[^,=]*)*$")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> DatasetSpec:
    spec = spec.strip()
    if not spec:
        raise DataError("dataset spec is empty; give a built-in name or a path")
    name, sep, tail = spec.rpartition(":")
    if not sep or not name or not _OPTIONS_TAIL.match(tail):
        return DatasetSpec(spec)
    options: dict[str, str] = {}
    for pair in tail.split(","):
        key, _, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if key not in ALLOWED_OPTIONS:
            raise DataError(
                f"dataset spec {spec!r}: unknown option {key!r}; "
                f"allowed options: {', '.join(ALLOWED_OPTIONS)}"
            )
        if key in options:
            raise DataError(f"dataset spec {spec!r}: option {key!r} given more than once")
        if not value:
            raise DataError(f"dataset spec {spec!r}: option {key!r} needs a value ({key}=...)")
        options[key] = value
    return DatasetSpec(name, options)
