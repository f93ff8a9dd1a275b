"""Request bodies -> validated float32 arrays, arrays -> response bytes: the service's hot path.

Pure functions over bytes/str and numpy; no web framework. Every bad input raises a
`service.errors` exception whose message names the field and what was expected, because any
other exception reaching the handler becomes a 500 (a bug, not a client error).

Speed rules: no per-float Python objects beyond what `orjson.loads` already built, no
`.tolist()`. Nested lists are turned into arrays by `np.array` (C loop), validation runs on the
resulting array, and the slow Python walks in this module only run to *explain* a failure.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import re
import zipfile
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from service.errors import InvalidInput, MalformedBody, NotAcceptable, UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
NPY_MEDIA_TYPE = "application/x-npy"
NPZ_MEDIA_TYPE = "application/x-npz"
PNG_MEDIA_TYPE = "image/png"

BodyFormat = Literal["json", "npy"]
ResponseFormat = Literal["json", "npy", "npz", "png"]
# What every array route can send; image models add "png" on some routes (service.images).
ARRAY_FORMATS: tuple[ResponseFormat, ...] = ("json", "npy", "npz")

F32 = npt.NDArray[np.float32]

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
# Non-finite numbers as clients write them: Python's json (NaN, Infinity, -Infinity), Jackson
# and JSON5 (+Infinity), and `str(float)` in Python, numpy or C (nan, inf, -inf). None is JSON,
# but each means "not a finite number" (422), not "not JSON at all" (400).
_NONFINITE_TOKEN = re.compile(r"[+-]?(?:nan|inf(?:inity)?)\b", re.IGNORECASE)

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
# Longdouble is platform dependent and never what a client means; float16/32/64 and ints are.
_MAX_FLOAT_ITEMSIZE = 8
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_BOOL_TRUE = frozenset({"true", "1", "yes"})
_BOOL_FALSE = frozenset({"false", "0", "no"})


# --------------------------------------------------------------------------- negotiation


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ('' when there is none)."""
    return "" if content_type is None else content_type.partition(";")[0].strip().lower()


@functools.lru_cache(maxsize=256)
def request_format(content_type: str | None) -> BodyFormat:
    """The body format named by a Content-Type header; a missing header means JSON.

    Memoised: clients send the same few headers over and over (errors are never cached)."""
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
            f"unsupported Content-Type {media!r}; send one of: {', '.join(accepted)}",
            {"content_type": content_type, "accepted": accepted},
        ) from None


@functools.lru_cache(maxsize=256)
def response_format(
    accept: str | None, offered: tuple[ResponseFormat, ...] = ARRAY_FORMATS
) -> ResponseFormat:
    """Pick the response format from an Accept header (RFC 9110 media ranges with q-values).

    `offered` is what this route can send for this model (PNG only for image models).
    `*/*` and `application/*` only make JSON acceptable: a client that wants binary arrays names
    the type; `image/*` makes PNG acceptable. Per offered type the most specific matching range
    decides its q (so
    `application/json;q=0, */*` refuses JSON). Highest q wins; at equal q a type named
    explicitly beats one matched by a wildcard, then the range listed first wins.
    """
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
            f"cannot produce any media type in Accept {accept!r}; available: "
            f"{', '.join(available)}",
            {"accept": accept, "available": available},
        )
    return max(candidates)[3]


# --------------------------------------------------------------------------- JSON in


class JsonObject(dict[str, Any]):
    """A parsed JSON object that remembers whether its body could contain booleans at all.

    JSON booleans are the literal tokens `true`/`false`; if neither byte string occurs anywhere
    in the body (a C-speed substring search), no value in the document is a bool and
    `array_field` can skip its boolean scan. Any other dict (or a copy) is treated as "may
    contain booleans", so the hint can only make things faster, never less strict.
    """

    __slots__ = ("may_contain_booleans",)

    def __init__(self, value: dict[str, Any], *, may_contain_booleans: bool) -> None:
        super().__init__(value)
        self.may_contain_booleans = may_contain_booleans


def parse_json_object(body: bytes, *, max_depth: int = 32) -> dict[str, Any]:
    """Decode a request body that must be a JSON object nested at most `max_depth` levels."""
    if not body or body.isspace():
        raise InvalidInput(
            'request body is empty; expected a JSON object such as {"inputs": [[...]]}'
        )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(exc, max_depth) from exc
    if not isinstance(value, dict):
        raise InvalidInput(
            f'request body must be a JSON object such as {{"inputs": [[...]]}}; '
            f"got {_json_type(value)}"
        )
    # Checked after parsing so strings are known to be well formed (the depth scan relies on it);
    # orjson itself stops at ~1024 levels, so parsing first is bounded too.
    # A document cannot nest deeper than it has brackets; counting them is a C-speed pass, so
    # typical small bodies skip the scan (brackets inside strings only make it scan more).
    depth = _json_depth(body) if body.count(b"[") + body.count(b"{") > max_depth else 0
    if depth > max_depth:
        raise InvalidInput(
            f"JSON nesting is {depth} levels deep; the limit is {max_depth}",
            {"depth": depth, "max_depth": max_depth},
        )
    return JsonObject(value, may_contain_booleans=b"true" in body or b"false" in body)


def _decode_error(exc: orjson.JSONDecodeError, max_depth: int) -> InvalidInput | MalformedBody:
    """Turn orjson's error into ours, recognising the failures a client can act on."""
    if "depth limit exceeded" in exc.msg:
        return InvalidInput(
            f"JSON nesting is too deep; the limit is {max_depth} levels",
            {"max_depth": max_depth},
        )
    if "infinity" in exc.msg:  # "number is infinity when parsed as double", e.g. 1e400
        return InvalidInput(
            f"number out of range at character {exc.pos}: non-finite numbers are not allowed",
            {"position": exc.pos},
        )
    # orjson rejects NaN/Infinity tokens with a generic "unexpected character" at the token, or
    # "no digit after sign" just after a sign; say what is really wrong. `pos` is a character
    # index into the decoded document.
    text, pos = exc.doc, exc.pos
    start = pos - 1 if text[pos - 1 : pos] in ("-", "+") else pos
    if _NONFINITE_TOKEN.match(text, start):
        return InvalidInput(
            f"non-finite number at character {pos}: NaN and Infinity are not allowed in JSON",
            {"position": pos},
        )
    return MalformedBody(f"request body is not valid JSON: {exc}", {"position": exc.pos})


# Characters that matter for nesting depth: brackets, quotes, and backslash plus every character
# that can follow a backslash in a JSON escape (so escape pairs survive the deletion intact).
# Numbers contain none of these, so a large numeric body shrinks to just its brackets.
_SKELETON_KEEP = frozenset(b'[]{}"\\/bfnrtu')
_SKELETON_DELETE = bytes(c for c in range(256) if c not in _SKELETON_KEEP)
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


def _json_depth(body: bytes) -> int:
    """Maximum container nesting of a *valid* JSON document, in linear time and no recursion.

    Every step is a C-level bytes operation or a numpy reduction: delete irrelevant bytes, drop
    escape pairs that could hide a quote (`\\\\` first, left to right, matching how a JSON
    tokenizer pairs them; then `\\"`), so the remaining quotes alternate open/close and string
    contents are every odd piece of a split on `"`. What is left is brackets (and the letters of
    true/false/null); depth is the running maximum of +1/-1 steps.
    """
    skeleton = body.translate(None, _SKELETON_DELETE)
    if b"\\" in skeleton:
        skeleton = skeleton.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    if not skeleton:
        return 0
    steps = _DEPTH_STEP[np.frombuffer(skeleton, dtype=np.uint8)]
    return max(0, int(np.cumsum(steps, dtype=np.int64).max()))


def _json_type(value: Any) -> str:
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


# --------------------------------------------------------------------------- arrays in


def array_field(
    payload: dict[str, Any], field: str, *, required: bool = True, min_ndim: int = 2
) -> F32 | None:
    """The nested list of numbers under `field` as a C-contiguous float32 array.

    A missing field, or an explicit null, is "absent": an error if `required`, else None.

    Booleans: `np.array` silently turns `[1.5, true]` into floats and `[1, true]` into ints, so
    a numeric dtype alone does not prove the data was numeric. A bool can only have become
    exactly 0 or 1, so the check runs only when (a) the body could contain booleans at all (see
    `JsonObject`) and (b) the array holds an exact 0 or 1 (one vectorised comparison). Only then
    is the list scanned with `bool in map(type, chain(...))`, a C-level iteration that stops at
    the first bool (about as costly as `np.array` itself, and only on that path).
    """
    value = payload.get(field)
    if value is None:
        if required:
            raise InvalidInput(
                f"field '{field}' is required: a nested list of numbers with a leading batch axis",
                {"field": field},
            )
        return None
    if not isinstance(value, list):
        raise InvalidInput(
            f"field '{field}' must be a nested list of numbers with a leading batch axis; "
            f"got {_json_type(value)}",
            {"field": field},
        )
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged, or deeper than numpy allows
        raise _explain_bad_list(value, field) from None
    if array.dtype.kind not in "iuf":  # bool-only, strings, None/objects, oversized ints
        array = _numeric_fallback(value, field, array)
    elif (
        getattr(payload, "may_contain_booleans", True)
        and array.size
        and bool(((array == 0) | (array == 1)).any())
        and _contains_bool(value, array.ndim)
    ):
        raise _explain_bad_list(value, field)
    return _finish(array, field, min_ndim)


def _contains_bool(value: list[Any], ndim: int) -> bool:
    """Whether any leaf of a homogeneous `ndim`-deep nested list is a bool (C-level loop)."""
    leaves: Iterable[Any] = value
    for _ in range(ndim - 1):
        leaves = itertools.chain.from_iterable(leaves)
    return bool in map(type, leaves)


def _numeric_fallback(value: list[Any], field: str, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Handle a non-numeric inferred dtype: explain the bad leaf, or convert big ints."""
    problem = _find_problem(value, field)
    if problem is not None:
        raise problem
    # Every leaf is an int or float, yet numpy chose object: ints beyond int64/uint64.
    try:
        return np.array(value, dtype=np.float64)
    except OverflowError:
        raise InvalidInput(
            f"field '{field}' contains an integer too large for float32", {"field": field}
        ) from None


def _explain_bad_list(value: list[Any], field: str) -> InvalidInput:
    """The error for a list numpy could not turn into a numeric array."""
    problem = _find_problem(value, field)
    if problem is not None:
        return problem
    return InvalidInput(
        f"field '{field}' could not be read as a nested list of numbers", {"field": field}
    )


def _find_problem(value: list[Any], field: str) -> InvalidInput | None:
    """First structural or type problem in depth-first order, or None if the list is clean.

    Slow (one Python step per element) and only called once something is known to be wrong.
    Uses an explicit stack, so arbitrarily deep input cannot hit the recursion limit.
    """
    shape: list[int] = []  # the shape implied by the first item at every level
    node: Any = value
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]

    stack: list[tuple[tuple[int, ...], Any]] = [((), value)]
    while stack:
        index, node = stack.pop()
        depth = len(index)
        if isinstance(node, list):
            if depth >= len(shape) or len(node) != shape[depth]:
                return _ragged(field, index)
            stack.extend(((*index, i), node[i]) for i in reversed(range(len(node))))
        elif depth != len(shape):
            return _ragged(field, index)
        elif isinstance(node, bool) or not isinstance(node, int | float):
            return InvalidInput(
                f"field '{field}' must contain only numbers; "
                f"found {_json_type(node)} at index {index}",
                {"field": field, "index": list(index)},
            )
    return None


def _ragged(field: str, index: tuple[int, ...]) -> InvalidInput:
    return InvalidInput(
        f"field '{field}' is ragged: every item must have the same shape "
        f"(first mismatch at index {index})",
        {"field": field, "index": list(index)},
    )


def _finish(array: npt.NDArray[Any], field: str, min_ndim: int) -> F32:
    """Shared checks for JSON and npy input, then the float32 cast and finiteness check."""
    shape = tuple(int(n) for n in array.shape)
    if array.ndim == 0:
        raise InvalidInput(
            f"field '{field}' must be an array with a leading batch axis; got a scalar",
            {"field": field, "shape": []},
        )
    if shape[0] == 0:
        raise InvalidInput(
            f"field '{field}' is an empty batch; send at least one item",
            {"field": field, "shape": list(shape)},
        )
    if array.ndim < min_ndim:
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
    # Overflow to inf is expected here and reported below as a client error, not a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        result = array.astype(np.float32, order="C")  # always a fresh, writable copy
    bad = _first_nonfinite(result)
    if bad is not None:
        original = array[bad]
        if np.isfinite(original):
            raise InvalidInput(
                f"field '{field}' has value {original.item()!r} at index {bad}, outside the "
                f"float32 range (±{_FLOAT32_MAX:.8g})",
                {"field": field, "index": list(bad)},
            )
        raise _nonfinite(field, bad, original)
    return result


def _first_nonfinite(array: npt.NDArray[Any]) -> tuple[int, ...] | None:
    """Index of the first NaN/±inf in C order, or None; cheap when everything is finite."""
    if array.dtype.kind not in "fc":
        return None  # integers are always finite
    finite = np.isfinite(array)
    if bool(finite.all()):
        return None
    flat = int(np.flatnonzero(~finite.ravel(order="C"))[0])
    return tuple(int(i) for i in np.unravel_index(flat, array.shape))


def _nonfinite(field: str, index: tuple[int, ...], value: Any) -> InvalidInput:
    return InvalidInput(
        f"field '{field}' contains a non-finite number ({value}) at index {index}; "
        "NaN and Infinity are not allowed",
        {"field": field, "index": list(index)},
    )


def require_finite(array: npt.NDArray[Any], field: str) -> None:
    """Raise InvalidInput naming the first NaN/±inf in `array` (C order)."""
    bad = _first_nonfinite(array)
    if bad is not None:
        raise _nonfinite(field, bad, array[bad])


@functools.lru_cache(maxsize=128)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran_order, dtype) of an .npy header, via numpy's literal_eval-based reader.

    Memoised on the exact header bytes: a client streaming same-shaped batches sends the same
    header every time, and parsing it costs more than reading the data (errors are not cached).
    """
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    # 2.0 and 3.0 share the layout; 3.0 only differs for unicode field names
    return np.lib.format.read_array_header_2_0(stream)


def parse_npy(body: bytes, field: str, *, min_ndim: int = 2) -> F32:
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
    header_end = prefix + int.from_bytes(body[8:prefix], "little") if len(body) >= prefix else -1
    if header_end < 0 or header_end > len(body):
        raise MalformedBody("malformed .npy header: truncated", {"field": field})
    try:
        shape, fortran_order, dtype = _npy_header(body[:header_end])
    except Exception as exc:
        # Deliberately broad: numpy's reader on hostile bytes raises ValueError, SyntaxError,
        # tokenize.TokenError, EOFError, ... and all of them mean the same thing here. The
        # header is bounded (10 kB by default), so nothing expensive hides behind this.
        raise MalformedBody(f"malformed .npy header: {exc}", {"field": field}) from exc

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
            f"malformed .npy header: shape {shape} is not integers", {"field": field}
        )
    if any(n < 0 for n in shape):
        raise MalformedBody(f"malformed .npy header: negative shape {shape}", {"field": field})
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(body) - header_end
    if actual != expected:
        raise MalformedBody(
            f".npy data is {actual} bytes but the header's shape {shape} of {dtype} needs "
            f"{expected} (truncated or trailing data)",
            {"field": field},
        )
    order: Literal["C", "F"] = "F" if fortran_order else "C"
    try:
        if count == 0:
            array: npt.NDArray[Any] = np.empty(shape, dtype=dtype)  # `_finish` reports it
        else:  # a read-only view on the body; `_finish` makes the float32 copy
            flat = np.frombuffer(body, dtype=dtype, count=count, offset=header_end)
            array = flat.reshape(shape, order=order)
    except (ValueError, TypeError, OverflowError) as exc:
        # Shapes numpy itself cannot hold pass the size check when they have no (or one)
        # element: more than 64 axes, an axis beyond int64, (0, 2**62, 2**62), ...
        raise InvalidInput(
            f"field '{field}' has shape {shape}, which is not a valid array shape: {exc}",
            {"field": field, "ndim": len(shape)},
        ) from None
    return _finish(array, field, min_ndim)


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
        f"parameter '{field}' must be a boolean (true/false, 1/0, yes/no); got {value!r}",
        {"field": field},
    )
