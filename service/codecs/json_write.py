"""JSON answers: a result with numpy arrays in it, written by orjson in C."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson


def json_bytes(payload: dict[str, Any]) -> bytes:
    """Serialise a response with numpy arrays written by orjson's native (C) numpy support.

    Arrays anywhere in the payload are handled: orjson calls `_numpy_default` only for those it
    cannot write directly (non-contiguous, 0-d), so the common case has no Python step at all.
    NaN/inf in float arrays are written as `null` (JSON has no such numbers); outputs are
    expected finite, and a client must treat null as "not a number".
    """
    try:
        return orjson.dumps(payload, default=_numpy_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        # orjson refuses non-native byte order outright instead of calling `default`; such
        # arrays never come from onnxruntime, so pay for a walk of the containers only here.
        return orjson.dumps(
            _native_arrays(payload), default=_numpy_default, option=orjson.OPT_SERIALIZE_NUMPY
        )


def _numpy_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.ndim == 0:
            return obj.item()
        if not obj.flags.c_contiguous:
            return np.ascontiguousarray(obj)
    # Returning the same array again would loop; an unsupported dtype is a server bug (500).
    raise TypeError(f"cannot serialise {type(obj).__name__} {getattr(obj, 'dtype', '')} to JSON")


def _native_arrays(value: Any) -> Any:
    """A copy of the containers in `value` with every array in native byte order."""
    if isinstance(value, np.ndarray):
        return value.astype(value.dtype.newbyteorder("="), copy=False)
    if isinstance(value, dict):
        return {key: _native_arrays(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_native_arrays(item) for item in value]
    return value
