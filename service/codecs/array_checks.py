"""What every decoded request array must be before the runtime sees it, whichever codec read it.

A C-contiguous, writable float32 array with a leading batch axis, no empty axis, every value
finite and inside the float32 range. The JSON and npy readers both end here, so a client gets
the same 422 for the same mistake in either format.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from service.errors import InvalidInput

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_shape(shape: tuple[int, ...], field: str, min_ndim: int) -> None:
    """A batch shape: at least `min_ndim` axes, at least one item, no empty axis."""
    if not shape:
        raise InvalidInput(
            f"field '{field}' must be an array with a leading batch axis; got a scalar",
            {"field": field, "shape": []},
        )
    if shape[0] == 0:
        raise InvalidInput(
            f"field '{field}' is an empty batch; send at least one item",
            {"field": field, "shape": list(shape)},
        )
    if len(shape) < min_ndim:
        raise InvalidInput(
            f"field '{field}' needs a leading batch axis (at least {min_ndim} dimensions): "
            f"got shape {shape}, send {'[' * min_ndim}...{']' * min_ndim} for one item",
            {"field": field, "shape": list(shape)},
        )
    if 0 in shape:
        raise InvalidInput(
            f"field '{field}' has empty items (shape {shape}); every item needs at least one value",
            {"field": field, "shape": list(shape)},
        )


def to_float32(array: npt.NDArray[Any], field: str, first_item: int = 0) -> FloatArray:
    """A fresh C-contiguous float32 copy of a numeric array, refusing NaN, ±inf and values
    beyond float32. `first_item`: the batch index of `array[0]`, when it is a slice of a
    larger batch, so that errors name the index the client sent."""
    # Overflow to inf is expected here and reported below as a client error, not a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        result = array.astype(np.float32, order="C")  # always a fresh, writable copy
    bad = first_nonfinite(result)
    if bad is not None:
        original = array[bad]
        shown = (bad[0] + first_item, *bad[1:])
        if np.isfinite(original):
            raise InvalidInput(
                f"field '{field}' has value {original.item()!r} at index {shown}, outside the "
                f"float32 range (±{FLOAT32_MAX:.8g})",
                {"field": field, "index": list(shown)},
            )
        raise nonfinite_error(field, shown, original)
    return result


def finish_array(array: npt.NDArray[Any], field: str, min_ndim: int) -> FloatArray:
    """`check_shape`, then `to_float32`: the last step of every array a request carries."""
    check_shape(tuple(int(n) for n in array.shape), field, min_ndim)
    return to_float32(array, field)


def first_nonfinite(array: npt.NDArray[Any]) -> tuple[int, ...] | None:
    """Index of the first NaN/±inf in C order, or None; cheap when everything is finite."""
    if array.dtype.kind not in "fc":
        return None  # integers are always finite
    finite = np.isfinite(array)
    if bool(finite.all()):
        return None
    flat = int(np.flatnonzero(~finite.ravel(order="C"))[0])
    return tuple(int(i) for i in np.unravel_index(flat, array.shape))


def nonfinite_error(field: str, index: tuple[int, ...], value: Any) -> InvalidInput:
    return InvalidInput(
        f"field '{field}' contains a non-finite number ({value}) at index {index}; "
        "NaN and Infinity are not allowed",
        {"field": field, "index": list(index)},
    )


def require_finite(array: npt.NDArray[Any], field: str) -> None:
    """Raise InvalidInput naming the first NaN/±inf in `array` (C order)."""
    bad = first_nonfinite(array)
    if bad is not None:
        raise nonfinite_error(field, bad, array[bad])


def json_type(value: Any) -> str:
    """The JSON name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
