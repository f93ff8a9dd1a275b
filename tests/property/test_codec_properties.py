"""Properties of service.codecs.media: what a client sends either comes back as the same float32
values, or is refused with one of the service's own 4xx errors; nothing else ever escapes.

Any other exception reaching the handler is a 500, which DESIGN.md calls a bug, so every test
here that feeds hostile input asserts the exception *type* as well as the status.
"""

from __future__ import annotations

import io
import json
import math
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bundle.arrays import FloatArray
from service.codecs.json_read import array_field, parse_json_object
from service.codecs.json_write import json_bytes
from service.codecs.media import (
    JSON_MEDIA_TYPE,
    NPY_MEDIA_TYPE,
    NPZ_MEDIA_TYPE,
    request_format,
    response_format,
)
from service.codecs.npy import parse_npy
from service.errors import InvalidInput, ServiceError
from tests.property.conftest import PROFILE

# Overflow and NaN handling must be silent: reported as errors, never as numpy warnings.
pytestmark = pytest.mark.filterwarnings("error")

T = TypeVar("T")
BASE = settings.get_profile(PROFILE)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The service's default depth limit (ServiceSettings.max_json_depth).
DEFAULT_DEPTH = 32


def parse_inputs(body: bytes, *, max_depth: int = DEFAULT_DEPTH, min_ndim: int = 2) -> FloatArray:
    """The service's JSON path for an array field: parse_json_object, then array_field."""
    result = array_field(parse_json_object(body, max_depth=max_depth), "inputs", min_ndim=min_ndim)
    assert result is not None
    return result


def attempt(call: Callable[[], T]) -> T | ServiceError:
    """The call's result, or the ServiceError it raised; any other exception propagates."""
    try:
        return call()
    except ServiceError as error:
        return error


def assert_clean_refusal(error: ServiceError) -> None:
    """A refusal the client can act on: the service's own type, with a 4xx status."""
    assert 400 <= error.status < 500, (error.status, error.message)
    assert error.message


def assert_service_array(array: FloatArray) -> None:
    """What the codecs promise the runtime: fresh, C-contiguous, finite float32, no empty axes."""
    assert array.dtype == np.float32
    assert array.flags.c_contiguous
    assert array.flags.writeable
    assert array.ndim >= 1
    assert 0 not in array.shape
    assert bool(np.isfinite(array).all())


# --------------------------------------------------------------------------- float32 arrays

# Every finite float32, with the awkward ones drawn often: both signs of zero, subnormals down
# to the smallest, the largest finite values, and one ulp either side of 1.
_awkward = st.sampled_from(
    [
        0.0,
        -0.0,
        float(np.float32(1e-45)),  # smallest subnormal
        -float(np.float32(1e-45)),
        float(np.finfo(np.float32).smallest_normal),
        float(np.nextafter(np.float32(1), np.float32(0))),
        float(np.nextafter(np.float32(1), np.float32(2))),
        FLOAT32_MAX,
        -FLOAT32_MAX,
    ]
)
finite_float32 = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    _awkward,
)
array_shapes = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)
float32_arrays = hnp.arrays(np.float32, array_shapes, elements=finite_float32)


def nested_text(array: npt.NDArray[Any], number: Callable[[Any], str]) -> str:
    """A nested JSON list written by hand, one number token per element via `number`."""
    if array.ndim == 1:
        return "[" + ",".join(number(value) for value in array) + "]"
    return "[" + ",".join(nested_text(item, number) for item in array) + "]"


def _float32_repr(value: np.float32) -> str:
    # numpy's shortest round-trip repr of the float32 itself (e.g. "0.1", "3.4028235e+38"),
    # what a client using float32 throughout would write; shorter than float64's repr.
    return str(np.float32(value))


def _integral_as_int(value: np.float32) -> str:
    # A client that writes whole numbers without a fraction: `16`, and for float32's large
    # values a long integer literal beyond int64 (orjson reads those as float64, exactly).
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


JSON_WRITERS: dict[str, Callable[[FloatArray], bytes]] = {
    # the service's own writer: orjson's native numpy support, float32 shortest repr
    "service": lambda a: json_bytes({"inputs": a}),
    # float64 shortest repr of each float32 value (longer, e.g. 0.10000000149011612)
    "orjson-list": lambda a: orjson.dumps({"inputs": a.tolist()}),
    # Python's json: repr floats, spaces after separators, and with indentation
    "python-json": lambda a: json.dumps({"inputs": a.tolist()}).encode(),
    "python-json-indented": lambda a: json.dumps({"inputs": a.tolist()}, indent=2).encode(),
    "float32-repr": lambda a: ('{"inputs": ' + nested_text(a, _float32_repr) + "}").encode(),
    "integers": lambda a: ('{"inputs": ' + nested_text(a, _integral_as_int) + "}").encode(),
}


@settings(BASE, max_examples=100)
@given(float32_arrays, st.sampled_from(sorted(JSON_WRITERS)))
@example(np.array([[FLOAT32_MAX, -FLOAT32_MAX, 1e-45, -0.0]], dtype=np.float32), "python-json")
@example(np.array([[FLOAT32_MAX, 2.0**64, 3.0, 0.5]], dtype=np.float32), "integers")
def test_json_round_trip_gives_the_same_float32_values(array: FloatArray, writer: str) -> None:
    # A float32 is exact in float64, and any decimal that reads back as that float64 (or, for
    # the float32 repr, as a float64 within half a float32 ulp) rounds to the same float32.
    result = parse_inputs(JSON_WRITERS[writer](array))
    assert_service_array(result)
    assert result.shape == array.shape
    # `int(-0.0)` is `0`: the integer writer cannot carry the sign of zero; -0.0 + 0.0 == +0.0.
    expected = array + np.float32(0.0) if writer == "integers" else array
    assert result.tobytes() == np.ascontiguousarray(expected).tobytes()


# --------------------------------------------------------------------------- npy


NPY_KINDS = ["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]


@st.composite
def npy_arrays(draw: st.DrawFn) -> npt.NDArray[Any]:
    """Any accepted dtype in either byte order and either memory order, NaN/inf included."""
    kind = draw(st.sampled_from(NPY_KINDS))
    order = draw(st.sampled_from("<>"))
    dtype = np.dtype(order + kind)
    array = draw(hnp.arrays(dtype, array_shapes))
    if draw(st.booleans()):
        array = np.asfortranarray(array)
    return array


def npy_body(array: npt.NDArray[Any], version: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


npy_versions = st.sampled_from([(1, 0), (2, 0), (3, 0)])


@settings(BASE, max_examples=100)
@given(npy_arrays(), npy_versions)
@example(np.array([[np.nan, 1.0]], dtype=">f8"), (1, 0))
@example(np.array([[3.5e38, 1.0]], dtype="<f8"), (1, 0))
@example(np.asfortranarray(np.arange(6, dtype=">i8").reshape(2, 3) * 2**60), (2, 0))
def test_npy_gives_float32_values_or_a_clear_refusal(
    array: npt.NDArray[Any], version: tuple[int, int]
) -> None:
    # The float32 value of each element is the definition of what the service takes; only
    # values with no float32 value (NaN, inf, beyond float32's range) may be refused.
    with np.errstate(over="ignore", invalid="ignore"):
        expected = array.astype(np.float32, order="C")
    body = npy_body(array, version)
    if not bool(np.isfinite(expected).all()):
        with pytest.raises(InvalidInput) as refused:
            parse_npy(body, "inputs")
        assert refused.value.status == 422
        assert "inputs" in refused.value.message
        return
    result = parse_npy(body, "inputs")
    assert_service_array(result)
    assert result.shape == array.shape
    assert result.tobytes() == expected.tobytes()


REFUSED_NPY_DTYPES = ["?", "<c8", ">c16", "<M8[s]", "<m8[s]", "<U2", "|S2", "<f16", "V4"]


@settings(BASE, max_examples=20)
@given(st.sampled_from(REFUSED_NPY_DTYPES), array_shapes)
def test_npy_other_dtypes_are_refused_with_422(dtype_name: str, shape: tuple[int, ...]) -> None:
    dtype = np.dtype(dtype_name)
    body = npy_body(np.zeros(shape, dtype=dtype), (1, 0))
    with pytest.raises(InvalidInput, match="dtype") as refused:
        parse_npy(body, "inputs")
    assert refused.value.status == 422


def _npy_file(header: str, *, version: int = 1, length: int | None = None) -> bytes:
    """An .npy prefix around any header text, padded like numpy pads it."""
    text = header.encode("latin-1", errors="replace")
    prefix = 10 if version == 1 else 12
    padding = (64 - (prefix + len(text) + 1) % 64) % 64
    text += b" " * padding + b"\n"
    size = len(text) if length is None else length
    width = 2 if version == 1 else 4
    return (
        b"\x93NUMPY"
        + bytes([version, 0])
        + (size % (1 << 8 * width)).to_bytes(width, "little")
        + text
    )


# Mostly dtypes the service takes, so that the other parts of the header get tested too.
_accepted_descr = st.sampled_from(["<f4", ">f8", "|u1", "<i8", "<f2", ">u2"])
_odd_descr = st.one_of(
    st.sampled_from(["<c8", "|b1", "O", "<U3", "<f16", "|V4", "<M8[s]"]),
    st.just([("a", "<f4"), ("b", "<i2")]),
    st.just(("<f4", (2,))),
    st.text(max_size=8),
)
_dimension = st.one_of(
    st.integers(0, 4),
    st.integers(-3, -1),
    st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64, 10**30]),
)
_header_shape: st.SearchStrategy[Any] = st.one_of(
    st.lists(_dimension, max_size=6).map(tuple),
    # More axes than numpy's 64, with exactly one element or with none
    st.integers(65, 70).map(lambda n: (1,) * n),
    st.integers(62, 70).map(lambda n: (0,) * n),
    st.sampled_from([[2, 3], (2.5,), (True, 2), "x", None, (1, (2,))]),
)


def _claimed_bytes(descr: Any, shape: Any) -> int | None:
    """How many data bytes a header claims, when that is small enough to send."""
    try:
        size = int(math.prod(shape)) * np.dtype(descr).itemsize
    except (TypeError, ValueError):
        return None
    return size if 0 <= size <= 256 else None


@st.composite
def npy_headers(draw: st.DrawFn) -> bytes:
    """Headers a hostile or broken client could send. Most are well formed with odd contents
    (huge, negative or too many dimensions, odd dtypes) and exactly the data they claim, so
    parsing gets past numpy's header reader; some break the header itself (missing or extra
    keys, a non-boolean fortran_order, a wrong header length) or send the wrong data size."""
    header: dict[str, Any] = {
        "descr": draw(st.one_of(_accepted_descr, _odd_descr)),
        "fortran_order": draw(st.booleans()),
        "shape": draw(_header_shape),
    }
    breakage = draw(
        st.sampled_from(["none"] * 6 + ["drop key", "extra key", "fortran", "length", "data"])
    )
    if breakage == "drop key":
        del header[draw(st.sampled_from(sorted(header)))]
    elif breakage == "extra key":
        header["extra"] = 1
    elif breakage == "fortran":
        header["fortran_order"] = draw(st.sampled_from([0, 1, None, "x"]))
    claimed = _claimed_bytes(header.get("descr"), header.get("shape"))
    sends_claimed = claimed is not None and breakage != "data"
    data = bytes(claimed or 0) if sends_claimed else draw(st.binary(max_size=64))
    length = draw(st.integers(0, 300)) if breakage == "length" else None
    version = draw(st.sampled_from([1, 2, 3]))
    return _npy_file(repr(header), version=version, length=length) + data


@settings(BASE, max_examples=120)
@given(st.one_of(npy_headers(), st.binary(max_size=200).map(lambda b: b"\x93NUMPY" + b)))
# Found by this test: numpy cannot build arrays with more than 64 axes, nor an axis beyond
# int64, and both were reaching the handler as a ValueError (a 500).
@example(_npy_file(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {(1,) * 65}}}") + b"1234")
@example(_npy_file(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {(0, 2**63)}}}"))
@example(_npy_file(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {(0,) * 65}}}"))
# Found in a full-suite run: a bool in the shape reached reshape as a TypeError (a 500).
@example(_npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 2)}") + bytes(8))
def test_hostile_npy_headers_only_raise_service_errors(body: bytes) -> None:
    result = attempt(lambda: parse_npy(body, "inputs"))
    if isinstance(result, ServiceError):
        assert_clean_refusal(result)
    else:
        assert_service_array(result)


@settings(BASE, max_examples=120)
@given(st.one_of(npy_headers(), npy_arrays().map(lambda a: npy_body(a, (1, 0)))))
def test_no_npy_body_costs_more_than_8x_its_size(body: bytes) -> None:
    """Issue 18: the shape is checked against the data before anything is allocated, so a
    header claiming a terabyte costs nothing, and the one copy made (float32, at most 4x an
    int8 body) stays within 8x the body (plus a little for numpy's header parse)."""
    tracemalloc.start()
    try:
        attempt(lambda: parse_npy(body, "inputs"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(body) + 256 * 1024, (peak, len(body))


@settings(BASE, max_examples=80)
@given(npy_arrays(), npy_versions, st.data())
def test_truncated_or_corrupted_npy_only_raise_service_errors(
    array: npt.NDArray[Any], version: tuple[int, int], data: st.DataObject
) -> None:
    body = bytearray(npy_body(array, version))
    if data.draw(st.booleans(), label="truncate"):
        body = body[: data.draw(st.integers(0, len(body) - 1), label="keep")]
    else:
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            where = data.draw(st.integers(0, len(body) - 1), label="where")
            body[where] = data.draw(st.integers(0, 255), label="byte")
    result = attempt(lambda: parse_npy(bytes(body), "inputs"))
    if isinstance(result, ServiceError):
        assert_clean_refusal(result)
    else:
        assert_service_array(result)


@settings(BASE, max_examples=100)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_npy_only_raise_service_errors(body: bytes) -> None:
    result = attempt(lambda: parse_npy(body, "inputs"))
    if isinstance(result, ServiceError):
        assert_clean_refusal(result)
    else:
        assert_service_array(result)


# --------------------------------------------------------------------------- arbitrary JSON

# Hypothesis' text leaves out lone surrogates, which are not valid UTF-8: the document would
# be malformed for a reason unrelated to the value under test.
_text = st.text(max_size=6)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond int64, uint64 and even float64's range
    | st.floats()  # NaN and +-inf included; Python's json writes them as NaN/Infinity tokens
    | finite_float32
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=25,
)


def _json_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_json_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_json_depth(item) for item in value.values()), default=0)
    return 0


def _rectangular_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested list of plain numbers (bools are not numbers), else None."""
    if not isinstance(value, list):
        return () if isinstance(value, int | float) and not isinstance(value, bool) else None
    shapes = {_rectangular_shape(item) for item in value}
    if not value:
        return (0,)
    if len(shapes) != 1 or None in shapes:
        return None
    (inner,) = shapes
    assert inner is not None
    return (len(value), *inner)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _fits_float32(number: float | int) -> bool | None:
    """Whether a JSON number has a finite float32 value; None right at the edge, where
    rounding (and double rounding through float64 for huge integers) decides."""
    if isinstance(number, float) and not math.isfinite(number):
        return False
    magnitude = abs(number)
    if magnitude < 3.4e38:
        return True
    if magnitude > 3.41e38:
        return False
    return None


@settings(BASE, max_examples=100)
@given(json_values, st.sampled_from(["python json", "orjson"]), st.integers(1, 3))
@example([[1.5, True]], "orjson", 2)
@example([[1, 2], [3]], "orjson", 2)
@example([[float("nan")]], "python json", 2)
@example([[2**64, -1]], "python json", 2)
@example([[10**400]], "python json", 2)
def test_any_json_value_is_an_array_or_a_clear_refusal(
    value: Any, writer: str, min_ndim: int
) -> None:
    if writer == "orjson":
        try:
            body = orjson.dumps({"inputs": value})
        except orjson.JSONEncodeError:  # it refuses integers beyond 64 bits
            assume(False)
        written = orjson.loads(body)["inputs"]  # orjson writes NaN and inf as null
    else:
        body = json.dumps({"inputs": value}).encode()
        written = value

    shape = _rectangular_shape(written)
    fits = [_fits_float32(leaf) for leaf in _leaves(written)] if shape is not None else [False]
    acceptable = (
        shape is not None
        and len(shape) >= min_ndim
        and 0 not in shape
        and _json_depth(written) <= 100
    )
    result = attempt(lambda: parse_inputs(body, max_depth=100, min_ndim=min_ndim))
    if isinstance(result, ServiceError):
        assert_clean_refusal(result)
        assert not (acceptable and all(f is True for f in fits)), result.message
        return
    assert acceptable, (written, result)
    assert all(f is not False for f in fits), (written, result)
    assert_service_array(result)
    assert result.shape == shape
    with np.errstate(over="ignore"):
        expected = np.array(_leaves(written), dtype=np.float64).astype(np.float32)
    # Integers beyond 2**53 may be rounded twice (to float64, then float32) or once (int64
    # straight to float32) depending on their neighbours; either is within one float32 ulp.
    np.testing.assert_allclose(result.ravel(), expected, rtol=2.0**-23, atol=0.0)
    exact = np.array([not isinstance(v, int) or abs(v) <= 2**53 for v in _leaves(written)])
    np.testing.assert_array_equal(result.ravel()[exact], expected[exact])


@settings(BASE, max_examples=100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_json_only_raise_service_errors(body: bytes) -> None:
    result = attempt(lambda: array_field(parse_json_object(body), "inputs", required=False))
    if isinstance(result, ServiceError):
        assert_clean_refusal(result)
    elif result is not None:
        assert_service_array(result)


@settings(BASE, max_examples=60)
@given(
    st.dictionaries(_text, json_values, max_size=3).map(lambda d: {"inputs": [[0.5]], **d}),
    st.integers(2, 12),
)
def test_nesting_beyond_the_limit_is_refused_and_within_it_accepted(
    document: dict[str, Any], max_depth: int
) -> None:
    body = json.dumps(document).encode()
    depth = _json_depth(document)
    result = attempt(lambda: parse_json_object(body, max_depth=max_depth))
    if not isinstance(result, ServiceError):
        assert depth <= max_depth
    elif "nesting" in result.message:
        assert depth > max_depth
        assert result.status == 422
    else:
        # the only other refusal of a valid object: a NaN/Infinity token or a huge number
        assert isinstance(result, InvalidInput)
        assert "non-finite" in result.message


@st.composite
def ragged_lists(draw: st.DrawFn) -> list[Any]:
    """A rectangular nested list of numbers with one change that breaks its shape."""
    array = draw(hnp.arrays(np.float32, array_shapes, elements=st.floats(-9.0, 9.0, width=32)))
    value: list[Any] = array.tolist()
    # Walk to some list below the batch axis (changing the batch list's own length only
    # changes the batch size) and change one thing there.
    path = [draw(st.integers(0, len(value) - 1))]
    node: list[Any] = value[path[0]]
    while isinstance(node[0], list) and draw(st.booleans()):
        index = draw(st.integers(0, len(node) - 1))
        node = node[index]
    change = draw(st.sampled_from(["append", "pop", "wrap a leaf", "unwrap a list"]))
    position = draw(st.integers(0, len(node) - 1))
    if change == "append":
        node.append(node[position])
    elif change == "pop":
        node.pop(position)
    elif change == "wrap a leaf" or not isinstance(node[position], list):
        node[position] = [node[position]]
    else:
        node[position] = 1.0
    return value


@settings(BASE, max_examples=60)
@given(ragged_lists(), st.sampled_from(["python json", "orjson"]))
@example([[1.0, 2.0], [3.0]], "orjson")
@example([[[1.0], [2.0]], [[3.0], 4.0]], "orjson")
def test_ragged_lists_are_refused_with_422(value: list[Any], writer: str) -> None:
    assume(_rectangular_shape(value) is None)
    document = {"inputs": value}
    body = orjson.dumps(document) if writer == "orjson" else json.dumps(document).encode()
    with pytest.raises(InvalidInput, match="ragged") as refused:
        parse_inputs(body)
    assert refused.value.status == 422


# How non-finite numbers reach the service in JSON: Python's json.dumps (NaN, Infinity,
# -Infinity), Jackson/JSON5 (+Infinity), naive `str(float)` formatting in Python, numpy or C
# (nan, inf, -inf), JavaScript and orjson (null), and numbers beyond float64 or float32.
NON_FINITE_TOKENS = [
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "+Infinity",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "+inf",
    "Inf",
    "INF",
    "null",
    "1e400",
    "-1e400",
    "1e39",
    "-3.5e38",
]


@settings(BASE, max_examples=60)
@given(
    hnp.arrays(np.float32, array_shapes, elements=st.floats(-9.0, 9.0, width=32)),
    st.sampled_from(NON_FINITE_TOKENS),
    st.integers(0, 10_000),
)
# Found by this test: lower-case and signed forms (as `str(float)` writes them) were a 400
# "not valid JSON" instead of the 422 for non-finite numbers.
@example(np.zeros((1, 2), np.float32), "nan", 1)
@example(np.zeros((1, 2), np.float32), "+Infinity", 0)
def test_non_finite_numbers_in_any_form_are_refused_with_422(
    array: FloatArray, token: str, position: int
) -> None:
    tokens = [repr(float(v)) for v in array.ravel()]
    tokens[position % array.size] = token
    numbers = iter(tokens)
    body = ('{"inputs": ' + nested_text(array, lambda _: next(numbers)) + "}").encode()
    with pytest.raises(InvalidInput) as refused:
        parse_inputs(body)
    assert refused.value.status == 422
    message = refused.value.message
    assert any(word in message for word in ("non-finite", "float32 range", "only numbers"))


# --------------------------------------------------------------------------- negotiation

_media = st.sampled_from(
    [
        JSON_MEDIA_TYPE,
        NPY_MEDIA_TYPE,
        NPZ_MEDIA_TYPE,
        "application/*",
        "*/*",
        "text/html",
        "APPLICATION/JSON",
        "",
    ]
)
_q = st.one_of(
    st.sampled_from(["1", "0", "0.5", "1.000", "0.001", "nan", "inf", "-1", "2", "1e0", ""]),
    st.text(max_size=4),
)
_params = st.lists(
    st.one_of(_q.map(lambda q: f"q={q}"), st.sampled_from(["charset=utf-8", "level=1", "q"])),
    max_size=2,
)
header_like = st.lists(
    st.tuples(_media, _params).map(lambda mp: ";".join([mp[0], *mp[1]])), max_size=4
).map(", ".join)
any_header = st.one_of(st.none(), st.text(max_size=40), header_like)


@settings(BASE, max_examples=100)
@given(any_header)
def test_accept_negotiation_never_crashes(accept: str | None) -> None:
    chosen = attempt(lambda: response_format(accept))
    if isinstance(chosen, ServiceError):
        assert chosen.status == 406
    else:
        assert chosen in ("json", "npy", "npz")


@settings(BASE, max_examples=100)
@given(any_header)
def test_content_type_negotiation_never_crashes(content_type: str | None) -> None:
    chosen = attempt(lambda: request_format(content_type))
    if isinstance(chosen, ServiceError):
        assert chosen.status == 415
    else:
        assert chosen in ("json", "npy")


_explicit = {JSON_MEDIA_TYPE: "json", NPY_MEDIA_TYPE: "npy", NPZ_MEDIA_TYPE: "npz"}


@settings(BASE, max_examples=60)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(_explicit)), st.integers(0, 1000)),
        min_size=1,
        max_size=3,
        unique_by=lambda pair: pair[0],
    )
)
def test_accept_picks_the_highest_q_then_the_first_listed(ranges: list[tuple[str, int]]) -> None:
    header = ", ".join(f"{media};q={q / 1000:.3f}" for media, q in ranges)
    offered = [(q, -position, media) for position, (media, q) in enumerate(ranges) if q > 0]
    if not offered:
        with pytest.raises(ServiceError) as refused:
            response_format(header)
        assert refused.value.status == 406
        return
    assert response_format(header) == _explicit[max(offered)[2]]
