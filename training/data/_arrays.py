"""Array aliases and the conversions every reader shares, so all formats obey the same rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from training.data.errors import DataError

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

IMAGE_CHANNELS = (1, 3)
# A channel-last guess needs real spatial extent; otherwise (N, 3, 4, 3)-like tabular blocks
# would be silently transposed.
MIN_CHANNEL_LAST_SIDE = 5


@dataclass(frozen=True)
class RawData:
    """What a reader hands back before options, validation and resizing are applied."""

    x: FloatArray
    is_image: bool
    kind: str
    labels: IntArray | None = None
    label_names: list[str] | None = None
    is_anomaly: BoolArray | None = None
    details: dict[str, object] = field(default_factory=dict)


def feature_layout(array: npt.NDArray[Any], where: str) -> tuple[npt.NDArray[Any], bool]:
    """Apply the shape rules for array files without copying anything.

    Returns a view in the array's own dtype, (N, D) or (N, C, H, W) (a channel axis added to
    greyscale (N, H, W), channel-last images transposed), and an is-image flag. A view of a
    memory-mapped file stays on disk until its rows are read (training.streaming.splits).
    """
    if array.dtype == object:
        raise DataError(f"{where}: holds Python objects, not numbers; save a numeric array")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{where}: has dtype {array.dtype}; expected a numeric array")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{where}: holds complex numbers; expected real values")
    shape = array.shape
    if array.ndim == 2:
        return array, False
    if array.ndim == 3:
        return array[:, None, :, :], True
    if array.ndim == 4:
        if shape[1] in IMAGE_CHANNELS:
            return array, True
        if (
            shape[3] in IMAGE_CHANNELS
            and shape[1] >= MIN_CHANNEL_LAST_SIDE
            and shape[2] >= MIN_CHANNEL_LAST_SIDE
        ):
            return array.transpose(0, 3, 1, 2), True
        raise DataError(
            f"{where}: 4-D array of shape {shape} is not an image batch; expected "
            "(N, C, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    raise DataError(
        f"{where}: array has {array.ndim} dimension(s) (shape {shape}); expected (N, D) tabular "
        "rows, (N, H, W) greyscale images, or (N, C, H, W) / (N, H, W, C) images with C = 1 or 3"
    )


def features_from_array(array: npt.NDArray[Any], where: str) -> tuple[FloatArray, bool]:
    """Apply the shape rules for array files; returns float32 features and an is-image flag."""
    view, is_image = feature_layout(array, where)
    return np.ascontiguousarray(view, dtype=np.float32), is_image


def _flatten_column(values: npt.NDArray[Any], what: str, where: str) -> npt.NDArray[Any]:
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim != 1:
        raise DataError(f"{where}: {what} must be one value per row, got shape {values.shape}")
    return values


def encode_labels(
    values: npt.NDArray[Any], where: str, what: str = "labels"
) -> tuple[IntArray, list[str] | None]:
    """Integer class ids as-is; strings become ids into their sorted unique names."""
    values = _flatten_column(values, what, where)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    if values.dtype.kind == "U":
        names = sorted({str(v) for v in values})
        ids = np.searchsorted(np.asarray(names), values).astype(np.int64)
        return ids, names
    if values.dtype == np.bool_ or np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64), None
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if finite.all() and np.array_equal(values, np.round(values)):
            return values.astype(np.int64), None
        bad = int(np.flatnonzero(~finite | (values != np.round(values)))[0])
        raise DataError(
            f"{where}: {what} must be whole-number class ids or strings; "
            f"row {bad} has {values[bad]!r}"
        )
    raise DataError(f"{where}: {what} have dtype {values.dtype}; expected integers or strings")


_TRUE_WORDS = frozenset({"1", "true", "yes", "1.0"})
_FALSE_WORDS = frozenset({"0", "false", "no", "0.0"})


def parse_flag_token(token: str) -> bool | None:
    """True/False for a recognised 0/1 or true/false word; None when it is neither."""
    word = token.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def anomaly_flags(values: npt.NDArray[Any], where: str, what: str = "anomaly flags") -> BoolArray:
    """Bool per row from a bool array, a 0/1 numeric array, or true/false strings."""
    values = _flatten_column(values, what, where)
    if values.dtype == np.bool_:
        return values.copy()
    if values.dtype.kind in "SU":
        tokens = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        return flags_from_tokens(tokens, where, what)
    if np.issubdtype(values.dtype, np.number) and not np.issubdtype(
        values.dtype, np.complexfloating
    ):
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: {what} must be 0 or 1; row {row} has {values[row]!r}")
        return values.astype(np.bool_)
    raise DataError(f"{where}: {what} have dtype {values.dtype}; expected bool or 0/1 values")


def flags_from_tokens(tokens: Sequence[str], where: str, what: str) -> BoolArray:
    flags = np.empty(len(tokens), dtype=np.bool_)
    for i, token in enumerate(tokens):
        flag = parse_flag_token(token)
        if flag is None:
            raise DataError(f"{where}: {what} must be 0/1 or true/false; row {i} has {token!r}")
        flags[i] = flag
    return flags
