"""Query-string parameters: the scalars of npy, image and body-less requests."""

from __future__ import annotations

from service.errors import InvalidInput, excerpt

_BOOL_TRUE = frozenset({"true", "1", "yes"})
_BOOL_FALSE = frozenset({"false", "0", "no"})


def parse_bool(value: str, field: str) -> bool:
    """A query-parameter boolean: true/false, 1/0, yes/no, case-insensitive."""
    text = value.strip().lower()
    if text in _BOOL_TRUE:
        return True
    if text in _BOOL_FALSE:
        return False
    raise InvalidInput(
        f"parameter '{field}' must be a boolean (true/false, 1/0, yes/no); got {excerpt(value)}",
        {"field": field},
    )
