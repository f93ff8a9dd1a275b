"""MNIST-style IDX files, parsed by hand: the format is a tiny header and a raw array."""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data._arrays import RawData, encode_labels
from training.data.errors import DataError

# IDX stores every multi-byte value big-endian.
_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_HEADER_BYTES = 4
_DIM_BYTES = 4  # each dimension is a big-endian unsigned 32-bit integer

_IDX_NAME = re.compile(r"(idx\d+-ubyte|\.idx\d+)(\.gz)?$", re.IGNORECASE)


def is_idx_path(path: Path) -> bool:
    return bool(_IDX_NAME.search(path.name))


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises EOFError for a cut-off stream and BadGzipFile (an OSError) for junk.
        raise DataError(f"{path}: cannot be read, truncated or corrupt ({exc})") from exc


def parse_idx(path: Path) -> npt.NDArray[Any]:
    raw = _read_bytes(path)
    if len(raw) < _HEADER_BYTES:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
    zero1, zero2, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected 0x0000 followed by a "
            "type code (08, 09, 0B, 0C, 0D, 0E) and the number of dimensions"
        )
    dims_end = _HEADER_BYTES + _DIM_BYTES * ndim
    if len(raw) < dims_end:
        raise DataError(f"{path}: truncated IDX file (header promises {ndim} dimensions)")
    shape = tuple(int(d) for d in struct.unpack(f">{ndim}I", raw[_HEADER_BYTES:dims_end]))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - dims_end
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX file; shape {shape} needs {expected} data bytes, found {found}"
        )
    if found > expected:
        raise DataError(
            f"{path}: IDX file has {found - expected} bytes beyond the shape {shape} in its header"
        )
    return np.frombuffer(raw, dtype=dtype, offset=dims_end).reshape(shape)


def sibling_labels_path(path: Path) -> Path | None:
    """`train-images-idx3-ubyte.gz` -> an existing `train-labels-idx1-ubyte[.gz]`, if any."""
    name = path.name
    lowered = name.lower()
    stem = name[:-3] if lowered.endswith(".gz") else name
    guess = stem.replace("idx3", "idx1").replace("images", "labels")
    if guess == stem:
        return None
    for candidate in (guess + ".gz", guess) if lowered.endswith(".gz") else (guess, guess + ".gz"):
        sibling = path.with_name(candidate)
        if sibling.is_file():
            return sibling
    return None


def read_idx(path: Path) -> RawData:
    array = parse_idx(path)
    if array.ndim == 3:
        x, is_image = array[:, None, :, :].astype(np.float32), True
    elif array.ndim == 2:
        x, is_image = array.astype(np.float32), False
    else:
        raise DataError(
            f"{path}: IDX array has shape {array.shape}; expected images (N, H, W) or rows "
            "(N, D). Is this a labels file? Pass the images file instead."
        )
    labels = label_names = None
    labels_path = sibling_labels_path(path)
    if labels_path is not None:
        labels, label_names = encode_labels(parse_idx(labels_path), str(labels_path))
        if len(labels) != len(x):
            raise DataError(
                f"{labels_path}: holds {len(labels)} labels but {path} holds {len(x)} items"
            )
    return RawData(
        x=x,
        is_image=is_image,
        kind="idx",
        labels=labels,
        label_names=label_names,
        details={"labels_file": None if labels_path is None else str(labels_path)},
    )
