"""npy bodies in, npy and npz answers out.

An npy body's header is read by our own bounded parser (its size, rank and axes checked before
numpy sees it), then the data is viewed in place and copied once to float32 by
`service.codecs.array_checks`, where the JSON reader's arrays end too. Answers are written
without pickle, member by member for npz.
"""

from __future__ import annotations

import functools
import io
import math
import re
import zipfile
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from service.codecs.array_checks import finish_array
from service.codecs.media import CACHEABLE_BYTES, NPY_MEDIA_TYPE
from service.errors import InvalidInput, MalformedBody, excerpt

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
# Longdouble is platform dependent and never what a client means; float16/32/64 and ints are.
_MAX_FLOAT_ITEMSIZE = 8
# numpy's own header reader refuses headers above 10,000 bytes; ours refuses them before the
# header is even copied out of the body. Shapes of more axes than this are no model's input.
_NPY_MAX_HEADER_BYTES = 10_000
_NPY_MAX_RANK = 32
_NPY_MAX_AXIS = 2**62
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


NpyHeader = tuple[tuple[int, ...], bool, np.dtype[Any]]


def _npy_header(header: bytes) -> NpyHeader:
    """(shape, fortran_order, dtype) of an .npy header, via numpy's literal_eval-based reader.

    Memoised on the exact header bytes when they are short (module docstring): a client
    streaming same-shaped batches sends the same header every time, and parsing it costs more
    than reading the data (errors are not cached).
    """
    if len(header) <= CACHEABLE_BYTES:
        return _cached_npy_header(header)
    return _read_npy_header(header)


def _read_npy_header(header: bytes) -> NpyHeader:
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    # 2.0 and 3.0 share the layout; 3.0 only differs for unicode field names
    return np.lib.format.read_array_header_2_0(stream)


_cached_npy_header = functools.lru_cache(maxsize=128)(_read_npy_header)


def parse_npy(body: bytes, field: str, *, min_ndim: int = 2) -> FloatArray:
    """Decode a single .npy array body into a C-contiguous float32 array.

    The header is parsed with numpy's own (literal_eval based, pickle free) reader, and the data
    is checked against the header *before* anything is allocated: `np.load` on a BytesIO
    allocates whatever shape the header claims, so a 100-byte body could ask for terabytes.
    """
    if not body:
        raise InvalidInput(
            f"request body is empty; expected an .npy array for field '{field}'", {"field": field}
        )
    if body.startswith(_ZIP_MAGIC):
        raise MalformedBody(
            f"request body is an .npz archive; send a single .npy array for field '{field}' "
            f"as {NPY_MEDIA_TYPE}",
            {"field": field},
        )
    if not body.startswith(_NPY_MAGIC):
        raise MalformedBody(
            f"request body is not an .npy file (it must start with the \\x93NUMPY magic); "
            f"expected an .npy array for field '{field}'",
            {"field": field},
        )
    version = (body[6], body[7]) if len(body) >= 8 else None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise MalformedBody(f"unsupported .npy format version {version}", {"field": field})
    # magic (6) + version (2) + header length: 2 bytes in v1, 4 in v2/v3; then the header
    prefix = 10 if version == (1, 0) else 12
    header_length = int.from_bytes(body[8:prefix], "little") if len(body) >= prefix else -1
    if header_length > _NPY_MAX_HEADER_BYTES:
        raise MalformedBody(
            f"malformed .npy header: {header_length} bytes long, above numpy's limit of "
            f"{_NPY_MAX_HEADER_BYTES}",
            {"field": field},
        )
    header_end = prefix + header_length
    if header_length < 0 or header_end > len(body):
        raise MalformedBody("malformed .npy header: truncated", {"field": field})
    try:
        shape, fortran_order, dtype = _npy_header(body[:header_end])
    except Exception as exc:
        # Deliberately broad: numpy's reader on hostile bytes raises ValueError, SyntaxError,
        # tokenize.TokenError, EOFError, ... and all of them mean the same thing here. The
        # header is at most 10 kB, so nothing expensive hides behind this.
        # numpy's message may name an object by its address: the same body must always get
        # the same answer.
        reason = _ADDRESS.sub("", str(exc))
        raise MalformedBody(
            f"malformed .npy header: {excerpt(reason, 200)}", {"field": field}
        ) from None

    if dtype.hasobject:
        raise InvalidInput(
            f"field '{field}': pickled/object arrays are refused; send a numeric array",
            {"field": field, "dtype": str(dtype)},
        )
    if dtype.kind not in "iuf" or (dtype.kind == "f" and dtype.itemsize > _MAX_FLOAT_ITEMSIZE):
        raise InvalidInput(
            f"field '{field}' has dtype {dtype}; expected float16/32/64 or an integer dtype",
            {"field": field, "dtype": str(dtype)},
        )
    # numpy's header reader lets any literal through: (True, 2) and (2.0,) are not shapes.
    if not all(type(n) is int for n in shape):
        raise MalformedBody(
            f"malformed .npy header: shape {excerpt(shape)} is not integers", {"field": field}
        )
    if len(shape) > _NPY_MAX_RANK:
        raise InvalidInput(
            f"field '{field}' has {len(shape)} axes; arrays of at most {_NPY_MAX_RANK} are read",
            {"field": field, "ndim": len(shape)},
        )
    if any(n < 0 for n in shape):
        raise MalformedBody(
            f"malformed .npy header: negative shape {excerpt(shape)}", {"field": field}
        )
    if any(n > _NPY_MAX_AXIS for n in shape):
        raise InvalidInput(
            f"field '{field}' has an axis longer than {_NPY_MAX_AXIS}, which no array can hold",
            {"field": field, "ndim": len(shape)},
        )
    count = math.prod(shape)  # at most 32 factors below 2**62: a bounded multiplication
    expected = count * dtype.itemsize
    actual = len(body) - header_end
    if actual != expected:
        raise MalformedBody(
            f".npy data is {actual} bytes but the header's shape {excerpt(shape)} of {dtype} "
            f"needs {excerpt(expected)} (truncated or trailing data)",
            {"field": field},
        )
    order: Literal["C", "F"] = "F" if fortran_order else "C"
    try:
        if count == 0:
            array: npt.NDArray[Any] = np.empty(shape, dtype=dtype)  # finish_array reports it
        else:  # a read-only view on the body; finish_array makes the float32 copy
            flat = np.frombuffer(body, dtype=dtype, count=count, offset=header_end)
            array = flat.reshape(shape, order=order)
    except (ValueError, TypeError, OverflowError) as exc:
        # Shapes numpy itself cannot hold pass the size check when they have no (or one)
        # element: more than 64 axes, an axis beyond int64, (0, 2**62, 2**62), ...
        raise InvalidInput(
            f"field '{field}' has shape {excerpt(shape)}, which is not a valid array shape: "
            f"{excerpt(str(exc), 200)}",
            {"field": field, "ndim": len(shape)},
        ) from None
    return finish_array(array, field, min_ndim)


def npy_bytes(array: npt.NDArray[Any]) -> bytes:
    """One array in .npy format (object arrays refused: they would need pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """Named arrays as an uncompressed .npz archive, readable by `np.load`.

    Written member by member like `np.savez` does, because `np.savez(buf, **arrays)` would break
    on a key named `file` or `allow_pickle`, and it would allow pickled members.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()
