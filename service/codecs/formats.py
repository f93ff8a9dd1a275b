"""Content negotiation, npy bodies in, and response bytes out: the service's hot path.

Pure functions over bytes/str and numpy; no web framework. Every bad input raises a
`service.errors` exception whose message names the field and what was expected, because any
other exception reaching the handler becomes a 500 (a bug, not a client error). JSON bodies
are read by `service.codecs.json_read`; both readers end in `service.codecs.array_checks`.

Every cache here is keyed by a client's header or bytes, so each is bounded in bytes as well
as entries: values longer than `CACHEABLE_BYTES` are worked out every time and never kept.
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
import orjson

from bundle.arrays import FloatArray
from service.codecs.array_checks import finish_array
from service.errors import InvalidInput, MalformedBody, NotAcceptable, UnsupportedMediaType, excerpt

JSON_MEDIA_TYPE = "application/json"
NPY_MEDIA_TYPE = "application/x-npy"
NPZ_MEDIA_TYPE = "application/x-npz"
PNG_MEDIA_TYPE = "image/png"

BodyFormat = Literal["json", "npy"]
ResponseFormat = Literal["json", "npy", "npz", "png"]
# What every array route can send; image models add "png" on some routes (service.codecs.images).
ARRAY_FORMATS: tuple[ResponseFormat, ...] = ("json", "npy", "npz")

_REQUEST_TYPES: dict[str, BodyFormat] = {JSON_MEDIA_TYPE: "json", NPY_MEDIA_TYPE: "npy"}
# Order is the tie-break of last resort in `response_format`: JSON is the default format.
_RESPONSE_TYPES: tuple[tuple[str, ResponseFormat], ...] = (
    (JSON_MEDIA_TYPE, "json"),
    (NPY_MEDIA_TYPE, "npy"),
    (NPZ_MEDIA_TYPE, "npz"),
    (PNG_MEDIA_TYPE, "png"),
)
# RFC 9110 qvalue grammar; anything else (e.g. "q=nan", "q=2") makes that media range invalid.
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")

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
# Header values (Content-Type, Accept) and npy headers up to this many bytes are memoised:
# clients send the same few over and over. 256 entries of at most this size: ~100 kB a cache.
CACHEABLE_BYTES = 256

_BOOL_TRUE = frozenset({"true", "1", "yes"})
_BOOL_FALSE = frozenset({"false", "0", "no"})


# --------------------------------------------------------------------------- negotiation


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ('' when there is none)."""
    return "" if content_type is None else content_type.partition(";")[0].strip().lower()


def request_format(content_type: str | None) -> BodyFormat:
    """The body format named by a Content-Type header; a missing header means JSON.

    Memoised for short headers (module docstring; errors are never cached)."""
    if content_type is not None and len(content_type) > CACHEABLE_BYTES:
        return _request_format(content_type)
    return _cached_request_format(content_type)


def _request_format(content_type: str | None) -> BodyFormat:
    if content_type is None:
        return "json"
    media = content_type.partition(";")[0].strip().lower()
    if not media:
        return "json"
    try:
        return _REQUEST_TYPES[media]
    except KeyError:
        accepted = list(_REQUEST_TYPES)
        raise UnsupportedMediaType(
            f"unsupported Content-Type {excerpt(media)}; send one of: {', '.join(accepted)}",
            {"content_type": excerpt(content_type), "accepted": accepted},
        ) from None


_cached_request_format = functools.lru_cache(maxsize=256)(_request_format)


def response_format(
    accept: str | None, offered: tuple[ResponseFormat, ...] = ARRAY_FORMATS
) -> ResponseFormat:
    """Pick the response format from an Accept header (RFC 9110 media ranges with q-values).

    `offered` is what this route can send for this model (PNG only for image models).
    `*/*` and `application/*` only make JSON acceptable: a client that wants binary arrays names
    the type; `image/*` makes PNG acceptable. Per offered type the most specific matching range
    decides its q (so
    `application/json;q=0, */*` refuses JSON). Highest q wins; at equal q a type named
    explicitly beats one matched by a wildcard, then the range listed first wins. Memoised
    for short headers (module docstring).
    """
    if accept is not None and len(accept) > CACHEABLE_BYTES:
        return _response_format(accept, offered)
    return _cached_response_format(accept, offered)


def _response_format(accept: str | None, offered: tuple[ResponseFormat, ...]) -> ResponseFormat:
    if accept is None or not accept.strip():
        return "json"
    ranges: list[tuple[str, float, int]] = []
    for position, part in enumerate(accept.split(",")):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        q: float | None = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else None
                break  # parameters after q are accept-extensions, which we ignore
        if q is not None:  # a malformed range is ignored rather than failing the request
            ranges.append((media, q, position))

    candidates: list[tuple[float, bool, int, ResponseFormat]] = []
    for offered_type, fmt in _RESPONSE_TYPES:
        if fmt not in offered:
            continue
        best: tuple[int, float, int] | None = None  # (specificity, q, position)
        for media, q, position in ranges:
            if media == offered_type:
                specificity = 2
            elif (fmt == "json" and media == "application/*") or (
                fmt == "png" and media == "image/*"
            ):
                specificity = 1
            elif fmt == "json" and media == "*/*":
                specificity = 0
            else:
                continue
            if best is None or specificity > best[0]:
                best = (specificity, q, position)
        if best is not None and best[1] > 0:
            candidates.append((best[1], best[0] == 2, -best[2], fmt))
    if not candidates:
        available = [media for media, fmt in _RESPONSE_TYPES if fmt in offered]
        raise NotAcceptable(
            f"cannot produce any media type in Accept {excerpt(accept)}; available: "
            f"{', '.join(available)}",
            {"accept": excerpt(accept), "available": available},
        )
    return max(candidates)[3]


_cached_response_format = functools.lru_cache(maxsize=256)(_response_format)


# --------------------------------------------------------------------------- npy in


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


# --------------------------------------------------------------------------- bytes out


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


# --------------------------------------------------------------------------- query params


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
