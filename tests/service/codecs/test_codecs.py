"""Tests for service.codecs.media: every rejected input gets its own test, plus round trips."""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bundle.arrays import FloatArray
from service.codecs.array_checks import require_finite
from service.codecs.json_read import NumberArray, array_field, parse_json_object
from service.codecs.json_write import json_bytes
from service.codecs.media import (
    JSON_MEDIA_TYPE,
    NPY_MEDIA_TYPE,
    NPZ_MEDIA_TYPE,
    request_format,
    response_format,
)
from service.codecs.npy import npy_bytes, npz_bytes, parse_npy
from service.codecs.params import parse_bool
from service.errors import (
    InvalidInput,
    MalformedBody,
    NotAcceptable,
    ServiceError,
    UnsupportedMediaType,
)

# Overflow and NaN handling must be silent (reported as errors, never as numpy warnings).
pytestmark = pytest.mark.filterwarnings("error")


def inputs_from(body: bytes, field: str = "inputs", **kwargs: Any) -> FloatArray:
    """parse_json_object then array_field, the way the service calls them."""
    result = array_field(parse_json_object(body), field, **kwargs)
    assert result is not None
    return result


def npy_of(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("Application/JSON;charset=UTF-8", "json"),
        ("application/x-npy", "npy"),
        (" APPLICATION/X-NPY ", "npy"),
    ],
)
def test_request_format_accepts(content_type: str | None, expected: str) -> None:
    assert request_format(content_type) == expected


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-npz", "multipart/form-data"])
def test_request_format_refuses_other_types_with_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        request_format(content_type)
    assert content_type in info.value.message
    assert JSON_MEDIA_TYPE in info.value.message
    assert NPY_MEDIA_TYPE in info.value.message
    assert info.value.status == 415


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("*/*", "json"),
        ("application/*", "json"),
        ("application/json", "json"),
        ("application/x-npy", "npy"),
        ("application/x-npz", "npz"),
        ("application/x-npy;q=0.9, application/json;q=0.1", "npy"),
        ("application/json;q=0.1, application/x-npy;q=0.9", "npy"),
        ("application/x-npy;q=0.5, */*", "json"),
        # At equal q a named type beats a wildcard, then the one listed first wins.
        ("*/*, application/x-npy", "npy"),
        ("application/x-npz, application/x-npy", "npz"),
        ("text/html, application/x-npy;q=0.2", "npy"),
        # The most specific range decides: JSON refused explicitly despite */*.
        ("application/json;q=0, */*, application/x-npz;q=0.3", "npz"),
        ("APPLICATION/X-NPY; Q=0.7", "npy"),
        # A malformed q makes its range invalid, not the header.
        ("application/x-npy;q=abc, application/json;q=0.5", "json"),
        ("application/x-npy;q=1.0;ext=1", "npy"),
        ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", "json"),
    ],
)
def test_response_format_negotiates(accept: str | None, expected: str) -> None:
    assert response_format(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "image/png, text/*",
        "application/json;q=0",
        "application/json;q=0, application/x-npy;q=0.000",
        "*/*;q=0",
        "application/x-npy;q=nan",
    ],
)
def test_response_format_refuses_with_406(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        response_format(accept)
    for offered in (JSON_MEDIA_TYPE, NPY_MEDIA_TYPE, NPZ_MEDIA_TYPE):
        assert offered in info.value.message
    assert info.value.status == 406


# --------------------------------------------------------------------------- JSON: good input


def test_parses_2d_floats_and_ints() -> None:
    result = inputs_from(b'{"inputs": [[1.5, 2], [-3, 4.25e-3]]}')
    assert result.dtype == np.float32
    assert result.flags.c_contiguous
    assert result.flags.writeable
    np.testing.assert_array_equal(result, np.array([[1.5, 2], [-3, 4.25e-3]], dtype=np.float32))


def test_parses_all_int_input() -> None:
    result = inputs_from(b'{"inputs": [[0, 1], [1, 0]]}')
    np.testing.assert_array_equal(result, np.array([[0, 1], [1, 0]], dtype=np.float32))


def test_parses_4d_images() -> None:
    images = np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4) / 7
    result = inputs_from(orjson.dumps({"inputs": images.tolist()}), min_ndim=4)
    assert result.shape == (2, 1, 3, 4)
    np.testing.assert_array_equal(result, images)


def test_parses_big_batch_with_exact_values() -> None:
    rng = np.random.default_rng(0)
    batch = rng.random((1000, 784), dtype=np.float32)
    batch[:, :100] = 0.0  # MNIST-like zeros: the boolean scan path runs and must pass
    body = orjson.dumps({"inputs": batch, "deterministic": True}, option=orjson.OPT_SERIALIZE_NUMPY)
    result = inputs_from(body)
    assert result.shape == (1000, 784)
    np.testing.assert_array_equal(result, batch)


def test_other_fields_may_hold_anything() -> None:
    payload = parse_json_object(b'{"inputs": [[1.0]], "flag": true, "name": "x", "z": null}')
    result = array_field(payload, "inputs")
    assert result is not None
    assert result.tolist() == [[1.0]]


def test_optional_field_missing_or_null_is_none() -> None:
    payload = parse_json_object(b'{"inputs": [[1.0]], "z": null}')
    assert array_field(payload, "latents", required=False) is None
    assert array_field(payload, "z", required=False) is None


def test_min_ndim_one_accepts_vectors() -> None:
    np.testing.assert_array_equal(inputs_from(b'{"v": [1, 2]}', "v", min_ndim=1), [1.0, 2.0])


def test_array_field_works_on_a_plain_dict() -> None:
    # A dict not from parse_json_object carries no hint and gets the full boolean check.
    result = array_field({"inputs": [[1.0, 0.0]]}, "inputs")
    assert result is not None
    assert result.tolist() == [[1.0, 0.0]]
    with pytest.raises(InvalidInput, match="boolean"):
        array_field({"inputs": [[1.0, False]]}, "inputs")


def test_integers_beyond_int64_are_converted() -> None:
    result = array_field({"inputs": [[2**70, 1]]}, "inputs")
    assert result is not None
    assert result[0, 0] == np.float32(2.0**70)


def test_parse_json_object_ignores_brackets_inside_strings() -> None:
    body = b'{"note": "[[[[[[{{{{ \\" [[[[ \\\\", "inputs": [[1]]}'
    assert parse_json_object(body, max_depth=3)["note"] == '[[[[[[{{{{ " [[[[ \\'


def test_parse_json_object_accepts_unicode_keys() -> None:
    assert plain(parse_json_object('{"é": [[1]]}'.encode())) == {"é": [[1]]}


def plain(value: Any) -> Any:
    """A parsed document with its number arrays (kept as text until read) as lists."""
    if isinstance(value, NumberArray):
        return value.to_list()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


# --------------------------------------------------------------------------- JSON: bad body


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="request body is empty; expected a JSON object"):
        parse_json_object(body)


@pytest.mark.parametrize(
    "body", [b'{"inputs": [[1.0, 2', b"{inputs: 1}", b'{"a": 1,}', b"\xff\xfe"]
)
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(MalformedBody, match="not valid JSON") as info:
        parse_json_object(body)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("body", "got"),
    [(b"[[1.0]]", "an array"), (b"1.5", "a number"), (b'"x"', "a string"), (b"null", "null")],
)
def test_top_level_must_be_an_object(body: bytes, got: str) -> None:
    with pytest.raises(InvalidInput, match=f"must be a JSON object.*got {got}"):
        parse_json_object(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [[NaN, 1.0]]}',
        b'{"inputs": [[1.0, Infinity]]}',
        b'{"inputs": [[1.0, -Infinity]]}',
        b'{"inputs": [[1.0,-Infinity]]}',
        '{"é": [[1.0, NaN]]}'.encode(),  # orjson's position counts characters, not bytes
    ],
)
def test_nan_and_infinity_tokens_are_named(body: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"non-finite number .*NaN and Infinity are not allowed"):
        parse_json_object(body)


def test_number_too_large_for_a_double() -> None:
    with pytest.raises(InvalidInput, match="non-finite numbers are not allowed"):
        inputs_from(b'{"inputs": [[1e400]]}')


def test_depth_above_limit() -> None:
    body = b'{"inputs": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}"
    with pytest.raises(InvalidInput, match="41 levels deep; the limit is 32"):
        parse_json_object(body)
    assert parse_json_object(body, max_depth=41)["inputs"]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b"[" * 100_000,  # unterminated as well
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a": ' + b'{"b": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    ],
)
def test_very_deep_documents_fail_cleanly(body: bytes) -> None:
    # orjson stops at its own limit; the error must be ours, not RecursionError: the nesting,
    # or what gives the document away before it is parsed (not an object, 5,000 keys).
    with pytest.raises(ServiceError) as info:
        parse_json_object(body)
    assert 400 <= info.value.status < 500
    assert re.search(
        "too deep|levels deep|must be a JSON object|more than 1024 strings", info.value.message
    )


def test_depth_just_under_orjson_limit_is_ours() -> None:
    body = b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(InvalidInput, match="1001 levels deep"):
        parse_json_object(body)


def _reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    return 0


_json_text = st.text(alphabet=st.sampled_from('[]{}"\\/bfnrtu\n\t é'), max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_json_text, inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(_json_text, _json_values, max_size=4))
@settings(max_examples=100, deadline=None)
def test_depth_scan_matches_the_document(document: dict[str, Any]) -> None:
    # Strings full of brackets, quotes and escapes must not change the measured depth.
    body = json.dumps(document).encode()
    depth = _reference_depth(document)
    assert plain(parse_json_object(body, max_depth=depth)) == document
    if depth > 1:
        with pytest.raises(InvalidInput, match=f"{depth} levels deep"):
            parse_json_object(body, max_depth=depth - 1)


# --------------------------------------------------------------------------- array_field: bad


def test_missing_required_field() -> None:
    with pytest.raises(InvalidInput) as info:
        inputs_from(b'{"other": [[1]]}')
    assert info.value.message == (
        "field 'inputs' is required: a nested list of numbers with a leading batch axis"
    )
    assert info.value.detail == {"field": "inputs"}


def test_null_required_field() -> None:
    with pytest.raises(InvalidInput, match="field 'inputs' is required"):
        inputs_from(b'{"inputs": null}')


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (b"1.5", "a number"),
        (b'"[[1]]"', "a string"),
        (b'{"a": [1]}', "an object"),
        (b"true", "a boolean"),
    ],
)
def test_field_not_a_list(value: bytes, got: str) -> None:
    with pytest.raises(InvalidInput, match=f"field 'inputs' must be a nested list.*got {got}"):
        inputs_from(b'{"inputs": ' + value + b"}")


@pytest.mark.parametrize(
    ("value", "index"),
    [
        (b"[[1, 2], [3]]", "(1,)"),
        (b"[[1, 2], 3]", "(1,)"),
        (b"[1, [2, 3]]", "(1,)"),
        (b"[[[1, 2], [3, 4]], [[1, 2], [3]]]", "(1, 1)"),
        (b"[[[1, 2], [3, 4]], [[1, 2], 3]]", "(1, 1)"),
        (b"[[1, [2]], [3, 4]]", "(0, 1)"),
    ],
)
def test_ragged(value: bytes, index: str) -> None:
    with pytest.raises(InvalidInput) as info:
        inputs_from(b'{"inputs": ' + value + b"}")
    assert "field 'inputs' is ragged: every item must have the same shape" in info.value.message
    assert index in info.value.message


@pytest.mark.parametrize(
    ("value", "found", "index"),
    [
        (b'[["a", 1.0]]', "a string", "(0, 0)"),
        (b'[[1.0, "2.0"]]', "a string", "(0, 1)"),
        (b"[[null, 1.0]]", "null", "(0, 0)"),
        (b"[[1.0, 2.0], [3.0, null]]", "null", "(1, 1)"),
        (b"[[1.0, {}]]", "an object", "(0, 1)"),
        (b"[[true]]", r"a boolean \(true\)", "(0, 0)"),
        (b"[[false, false]]", r"a boolean \(false\)", "(0, 0)"),
    ],
)
def test_non_numbers(value: bytes, found: str, index: str) -> None:
    with pytest.raises(
        InvalidInput, match=f"field 'inputs' must contain only numbers; found {found}"
    ):
        inputs_from(b'{"inputs": ' + value + b"}")
    with pytest.raises(InvalidInput) as info:
        inputs_from(b'{"inputs": ' + value + b"}")
    assert index in info.value.message


@pytest.mark.parametrize(
    ("value", "index"),
    [
        (b"[[1.0, true]]", "(0, 1)"),
        (b"[[true, 1.5]]", "(0, 0)"),
        (b"[[1, true]]", "(0, 1)"),  # numpy would infer int64
        (b"[[2.5, 3.5], [0.5, false]]", "(1, 1)"),
        (b"[[[[0.25, 0.5], [0.75, 2.0]]], [[[3.0, 4.0], [true, 5.0]]]]", "(1, 0, 1, 0)"),
    ],
)
def test_booleans_mixed_with_numbers(value: bytes, index: str) -> None:
    with pytest.raises(InvalidInput, match="found a boolean") as info:
        inputs_from(b'{"inputs": ' + value + b"}", min_ndim=2)
    assert index in info.value.message


@given(
    st.integers(1, 5),
    st.integers(1, 6),
    st.data(),
)
@settings(max_examples=100, deadline=None)
def test_a_boolean_anywhere_is_found(rows: int, cols: int, data: st.DataObject) -> None:
    numbers = st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False, width=32))
    grid: list[list[Any]] = [[data.draw(numbers) for _ in range(cols)] for _ in range(rows)]
    row, col = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))
    grid[row][col] = data.draw(st.booleans())
    with pytest.raises(InvalidInput, match="found a boolean"):
        inputs_from(orjson.dumps({"inputs": grid}))


def test_overflowing_float32() -> None:
    with pytest.raises(InvalidInput) as info:
        inputs_from(b'{"inputs": [[1.0, 2.0], [3.0, -1e39]]}')
    assert "field 'inputs'" in info.value.message
    assert "(1, 1)" in info.value.message
    assert "float32 range" in info.value.message
    assert info.value.detail == {"field": "inputs", "index": [1, 1]}


def test_empty_batch() -> None:
    with pytest.raises(InvalidInput, match="field 'inputs' is an empty batch"):
        inputs_from(b'{"inputs": []}')


@pytest.mark.parametrize("value", [b"[[]]", b"[[], []]", b"[[[]]]"])
def test_items_with_no_values(value: bytes) -> None:
    with pytest.raises(InvalidInput, match="field 'inputs' has empty items"):
        inputs_from(b'{"inputs": ' + value + b"}")


def test_one_dimensional_input_needs_batch_axis() -> None:
    with pytest.raises(InvalidInput) as info:
        inputs_from(b'{"inputs": [1.0, 2.0, 3.0]}')
    assert "field 'inputs'" in info.value.message
    assert "got shape (3,), send [[...]] for one item" in info.value.message


def test_min_ndim_four_refuses_2d() -> None:
    with pytest.raises(
        InvalidInput, match=r"at least 4 dimensions\): got shape \(1, 2\), send \[\[\[\[...\]\]\]\]"
    ):
        inputs_from(b'{"inputs": [[1.0, 2.0]]}', min_ndim=4)


def test_nan_in_a_plain_dict_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"non-finite number \(nan\) at index \(0, 1\)"):
        array_field({"inputs": [[1.0, float("nan")]]}, "inputs")


def test_deep_list_in_a_plain_dict_fails_cleanly() -> None:
    deep: list[Any] = [1.0]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidInput, match="field 'inputs'"):
        array_field({"inputs": deep}, "inputs")


# --------------------------------------------------------------------------- require_finite


def test_require_finite() -> None:
    require_finite(np.ones((2, 3), dtype=np.float32), "x")
    require_finite(np.arange(6).reshape(2, 3), "x")
    bad = np.zeros((2, 3))
    bad[1, 2] = -np.inf
    bad[1, 0] = np.inf
    with pytest.raises(InvalidInput) as info:
        require_finite(bad, "latents")
    assert "field 'latents'" in info.value.message
    assert "(1, 0)" in info.value.message
    assert info.value.detail == {"field": "latents", "index": [1, 0]}


# --------------------------------------------------------------------------- npy


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.uint8, ">f4"])
def test_npy_round_trip(dtype: Any) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    result = parse_npy(npy_of(array), "inputs")
    assert result.dtype == np.float32
    assert result.flags.c_contiguous
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array.astype(np.float32))


def test_npy_fortran_order() -> None:
    array = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    body = npy_of(array)
    assert b"'fortran_order': True" in body
    result = parse_npy(body, "inputs")
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, array)


def test_npy_format_version_2() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=(2, 0))
    np.testing.assert_array_equal(parse_npy(buffer.getvalue(), "inputs"), array)


def test_npy_empty_body() -> None:
    with pytest.raises(InvalidInput, match=r"request body is empty; expected an \.npy array"):
        parse_npy(b"", "inputs")


def test_npy_pickled_object_array_refused() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match="pickled/object arrays are refused"):
        parse_npy(buffer.getvalue(), "inputs")


def test_npy_truncated_data() -> None:
    body = npy_of(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(MalformedBody, match="truncated"):
        parse_npy(body[:-3], "inputs")


def test_npy_trailing_data() -> None:
    body = npy_of(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(MalformedBody, match="trailing"):
        parse_npy(body + b"\0\0\0\0", "inputs")


def test_npy_truncated_header() -> None:
    body = npy_of(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(MalformedBody, match=r"malformed \.npy header"):
        parse_npy(body[:20], "inputs")


def test_npy_header_claiming_a_huge_shape_allocates_nothing() -> None:
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**6)}
    np.lib.format.write_array_header_1_0(buffer, header)
    with pytest.raises(MalformedBody, match="truncated"):
        parse_npy(buffer.getvalue() + b"\0" * 64, "inputs")


def test_npy_random_bytes() -> None:
    body = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    with pytest.raises(MalformedBody, match=r"not an \.npy file"):
        parse_npy(body, "inputs")


def test_npy_json_sent_as_npy() -> None:
    with pytest.raises(MalformedBody, match=r"not an \.npy file"):
        parse_npy(b'{"inputs": [[1]]}', "inputs")


def test_npz_sent_as_npy() -> None:
    with pytest.raises(MalformedBody, match="npz archive"):
        parse_npy(npz_bytes({"inputs": np.ones((2, 2))}), "inputs")


@pytest.mark.parametrize(
    ("array", "dtype_name"),
    [
        (np.ones((2, 2), dtype=bool), "bool"),
        (np.ones((2, 2), dtype=np.complex64), "complex64"),
        (np.array([["a", "b"]]), "<U1"),
        (np.array([[b"a"]]), "|S1"),
        (np.zeros((2, 2), dtype=[("x", "<f4"), ("y", "<f4")]), "x"),
        (np.zeros((2, 2), dtype="datetime64[s]"), "datetime64"),
    ],
)
def test_npy_unsupported_dtypes(array: npt.NDArray[Any], dtype_name: str) -> None:
    with pytest.raises(InvalidInput, match="expected float16/32/64 or an integer dtype") as info:
        parse_npy(npy_of(array), "inputs")
    assert dtype_name in info.value.message
    assert "field 'inputs'" in info.value.message


def test_npy_nan_refused() -> None:
    array = np.zeros((2, 3), dtype=np.float32)
    array[1, 2] = np.nan
    with pytest.raises(InvalidInput, match=r"non-finite number \(nan\) at index \(1, 2\)"):
        parse_npy(npy_of(array), "inputs")


def test_npy_float64_overflowing_float32() -> None:
    array = np.zeros((1, 3))
    array[0, 1] = 1e39
    with pytest.raises(InvalidInput, match=r"index \(0, 1\), outside the float32 range"):
        parse_npy(npy_of(array), "inputs")


def test_npy_one_dimensional_refused() -> None:
    with pytest.raises(InvalidInput, match=r"got shape \(3,\), send \[\[...\]\] for one item"):
        parse_npy(npy_of(np.ones(3, dtype=np.float32)), "inputs")


def test_npy_scalar_refused() -> None:
    with pytest.raises(InvalidInput, match="got a scalar"):
        parse_npy(npy_of(np.array(1.5, dtype=np.float32)), "inputs")


@pytest.mark.parametrize("shape", [(0, 3), (0,), (2, 0)])
def test_npy_empty_arrays_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        parse_npy(npy_of(np.zeros(shape, dtype=np.float32)), "inputs")


@given(st.binary(max_size=8), st.integers(0, 200), st.data())
@settings(max_examples=300, deadline=None)
def test_npy_corrupted_headers_only_raise_service_errors(
    noise: bytes, where: int, data: st.DataObject
) -> None:
    body = bytearray(npy_of(np.arange(6, dtype=np.float32).reshape(2, 3)))
    where = min(where, len(body))
    if data.draw(st.booleans()):
        body[where : where + len(noise)] = noise  # overwrite (maybe shrinking the body)
    else:
        body[where:where] = noise  # insert
    try:
        result = parse_npy(bytes(body), "inputs")
    except ServiceError:
        return
    assert result.dtype == np.float32


# --------------------------------------------------------------------------- bytes out


def test_json_bytes_round_trip() -> None:
    arrays = {
        "f32": np.array([[0.1, -2.5e-8, 3.4e38]], dtype=np.float32),
        "f64": np.array([0.1, 1e300]),
        "i64": np.arange(3),
        "flags": np.array([True, False]),
    }
    decoded = orjson.loads(json_bytes({**arrays, "meta": {"model": "vae", "inner": arrays["i64"]}}))
    np.testing.assert_array_equal(np.array(decoded["f32"], dtype=np.float32), arrays["f32"])
    assert decoded["f64"] == [0.1, 1e300]
    assert decoded["i64"] == [0, 1, 2]
    assert decoded["flags"] == [True, False]
    assert decoded["meta"] == {"model": "vae", "inner": [0, 1, 2]}


def test_json_bytes_handles_awkward_arrays() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    payload = {
        "column": base[:, 1],  # non-contiguous view
        "transposed": base.T,
        "nested": {"deeper": {"fortran": np.asfortranarray(base)}},
        "in_list": [base[::2, ::2]],
        "big_endian": base.astype(">f4"),
        "scalar_array": np.array(2.5, dtype=np.float32),
        "scalar": np.float32(0.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    decoded = orjson.loads(json_bytes(payload))
    assert decoded["column"] == [1.0, 5.0, 9.0]
    assert decoded["transposed"] == base.T.tolist()
    assert decoded["nested"]["deeper"]["fortran"] == base.tolist()
    assert decoded["in_list"] == [[[0.0, 2.0], [8.0, 10.0]]]
    assert decoded["big_endian"] == base.tolist()
    assert decoded["scalar_array"] == 2.5
    assert decoded["scalar"] == 0.5
    assert decoded["empty"] == []


def test_json_bytes_writes_nan_as_null() -> None:
    assert orjson.loads(json_bytes({"x": np.array([np.nan, 1.0], dtype=np.float32)})) == {
        "x": [None, 1.0]
    }


def test_json_bytes_unsupported_dtype_is_a_server_error() -> None:
    with pytest.raises(TypeError):
        json_bytes({"x": np.array([1 + 2j])})


def test_npy_bytes_round_trip() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::2]
    loaded = np.load(io.BytesIO(npy_bytes(array)), allow_pickle=False)
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, array)


def test_npy_bytes_refuses_object_arrays() -> None:
    with pytest.raises(ValueError, match="allow_pickle"):
        npy_bytes(np.array([{}], dtype=object))


def test_npz_bytes_round_trip() -> None:
    arrays: dict[str, npt.NDArray[Any]] = {
        "mean": np.ones((2, 3), dtype=np.float32),
        "scores": np.arange(2, dtype=np.float64),
        "file": np.zeros(1, dtype=np.int8),  # would clash with np.savez's own parameter
    }
    body = npz_bytes(arrays)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    with np.load(io.BytesIO(body), allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for name, array in arrays.items():
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name], array)


def test_npz_bytes_empty() -> None:
    with np.load(io.BytesIO(npz_bytes({})), allow_pickle=False) as loaded:
        assert loaded.files == []


_float32_arrays = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5),
    elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@given(_float32_arrays)
@settings(max_examples=200, deadline=None)
def test_json_round_trip_is_exact_for_float32(array: FloatArray) -> None:
    # orjson writes float32 with the shortest repr that round-trips as float32, and parsing
    # that decimal as float64 then rounding to float32 is exact (53 >= 2 * 24 + 2 bits), so
    # the round trip is bit-exact (-0.0 included), not merely within an ulp.
    result = inputs_from(json_bytes({"inputs": array}), min_ndim=array.ndim)
    assert result.shape == array.shape
    assert result.tobytes() == np.ascontiguousarray(array).tobytes()


@given(_float32_arrays)
@settings(max_examples=100, deadline=None)
def test_npy_round_trip_is_exact(array: FloatArray) -> None:
    result = parse_npy(npy_bytes(array), "inputs", min_ndim=array.ndim)
    assert result.tobytes() == np.ascontiguousarray(array).tobytes()


# --------------------------------------------------------------------------- parse_bool


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        (" no ", False),
        ("false", False),
        ("0", False),
        ("NO", False),
        ("False", False),
    ],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_bool(text, "deterministic") is expected


@pytest.mark.parametrize("text", ["", "maybe", "2", "t", "on"])
def test_parse_bool_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="parameter 'deterministic' must be a boolean"):
        parse_bool(text, "deterministic")
