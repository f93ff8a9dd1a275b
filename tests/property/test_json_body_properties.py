"""Properties of service.codecs.json_read, the JSON request reader whose cost is bounded before the
work (issue 18).

- Nothing a client sends makes it raise anything but the service's own 4xx errors.
- Cutting number arrays out of a document changes nothing: any JSON object reads back as the
  very same document, whatever its strings, escapes, keys and whitespace.
- Its arrays are exactly what orjson and numpy make of the same text, and its refusals are the
  ones a strict reader would make; reading in chunks gives the same array or the same refusal
  as reading whole.
- No body costs more than a fixed multiple of its size plus a constant, measured with
  tracemalloc (every Python object and numpy array is counted).
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bundle.arrays import FloatArray
from service.codecs import json_read
from service.codecs.json_read import NumberArray, array_field, parse_json_object
from service.errors import ServiceError
from tests.property.conftest import PROFILE

pytestmark = pytest.mark.filterwarnings("error")

BASE = settings.get_profile(PROFILE)


def plain(value: Any) -> Any:
    """A parsed document with its number arrays (text until read) as lists."""
    if isinstance(value, NumberArray):
        return value.to_list()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def read(body: bytes, **limits: Any) -> FloatArray | ServiceError:
    """The service's JSON path for `inputs`, or the error it refused with; anything else
    propagates (and fails the test)."""
    try:
        result = array_field(parse_json_object(body), "inputs", **limits)
    except ServiceError as error:
        return error
    assert result is not None
    return result


def assert_refusal(error: ServiceError) -> None:
    assert 400 <= error.status < 500, (error.status, error.message)
    assert len(error.message) < 1024, len(error.message)  # an excerpt, never the body


@contextmanager
def chunks_of(size: int, *, small_bodies_whole: bool = True) -> Iterator[None]:
    """Read large arrays in chunks of `size` bytes, so small examples take the chunked path;
    `small_bodies_whole=False` sends small bodies the long way too (cut and envelope), so
    both ways are held to the same answers."""
    saved = json_read.CHUNK_BYTES, json_read.SMALL_BODY_BYTES
    json_read.CHUNK_BYTES = size
    if not small_bodies_whole:
        json_read.SMALL_BODY_BYTES = -1
    try:
        yield
    finally:
        json_read.CHUNK_BYTES, json_read.SMALL_BODY_BYTES = saved


# --------------------------------------------------------------------------- any bytes

# The bytes that matter to the splitter and to JSON, drawn often.
_structural = st.sampled_from(
    [*list('[]{},:"\\ \n\t0123456789.eE+-'), "true", "false", "null", "NaN", "\\u0000", "é"]
)
_jsonish = st.lists(_structural, max_size=300).map(lambda parts: "".join(parts).encode())


@given(st.one_of(st.binary(max_size=400), _jsonish))
@settings(BASE, max_examples=600)
@example(b'{"inputs": [[1, 2], [3]]}')
@example(b'{"inputs": [[1, "x"]], "y": [[2]]}')
@example(b'{"a": "\\"inputs\\": [[1]]", "inputs": [[2]]}')
@example(b'{"inputs": [[1]], "inputs": [1],[2]}')
@example(b'{"inputs": [[1]]]}')
@example(b'{"inputs": [1]][[2]}')
@example(b'{"inputs": [[1]] "x": 1}')
@example(b'{"x": "\\u0000' + b"0" * 16 + b':0", "inputs": [[1]]}')
def test_any_bytes_give_an_array_or_a_service_refusal(body: bytes) -> None:
    outcomes: list[int | tuple[tuple[int, ...], bytes]] = []
    for chunk, whole in ((json_read.CHUNK_BYTES, True), (json_read.CHUNK_BYTES, False), (8, False)):
        with chunks_of(chunk, small_bodies_whole=whole):
            result = read(body)
        if isinstance(result, ServiceError):
            assert_refusal(result)
            outcomes.append(result.status)
        else:
            assert result.dtype == np.float32
            assert bool(np.isfinite(result).all())
            outcomes.append((result.shape, result.tobytes()))
    # Every way of reading gives the same array, or refuses; a refusal may be worded (and, for
    # bodies that are not JSON at all, coded) differently, but never becomes an array.
    arrays = [o for o in outcomes if not isinstance(o, int)]
    assert not arrays or (len(arrays) == len(outcomes) and all(a == arrays[0] for a in arrays))


# --------------------------------------------------------------------------- round trip

_text = st.one_of(
    st.text(alphabet=st.sampled_from('ab1[]{}",:\\/ \n\té\x00\u2028'), max_size=10),
    # What a quote or backslash in a string could be mistaken to end or start.
    st.sampled_from(['": [1, 2], "b": [3]', '\\": [4]', '\\\\": [5]', "[[6]]", '\\"[7]\\"']),
)
_numbers = st.one_of(
    st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False, width=64)
)
_values = st.recursive(
    st.none() | st.booleans() | _numbers | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=40,
)
_layouts = st.sampled_from(
    [{}, {"indent": 2}, {"separators": (",", ":")}, {"separators": (" , ", " : ")}]
)


@given(st.dictionaries(_text, _values, max_size=5), _layouts, st.booleans())
@settings(BASE, max_examples=300)
@example({"a": 'x": [1, 2], "inputs": [3]', "inputs": [[9]]}, {}, True)
@example({'k\\": [1]': [[2]], "v": '\\\\": [3]'}, {}, False)
def test_any_object_reads_back_as_the_same_document(
    document: dict[str, Any], layout: dict[str, Any], ascii_only: bool
) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only, **layout).encode()
    assert plain(parse_json_object(body, max_depth=100)) == orjson.loads(body)
    with chunks_of(json_read.CHUNK_BYTES, small_bodies_whole=False):
        assert plain(parse_json_object(body, max_depth=100)) == orjson.loads(body)


# --------------------------------------------------------------------------- arrays


def reference(value: Any, min_ndim: int = 2) -> FloatArray | int:
    """What a strict reader makes of a decoded `inputs` value: the float32 array, or the status
    of its refusal (written independently of the service: a plain Python walk)."""
    if not isinstance(value, list):
        return 422
    shape: list[int] = []
    node: Any = value
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]

    def regular(node: Any, depth: int) -> bool:
        if depth == len(shape):
            return not isinstance(node, bool | list) and isinstance(node, int | float)
        return (
            isinstance(node, list)
            and len(node) == shape[depth]
            and all(regular(item, depth + 1) for item in node)
        )

    if not regular(value, 0) or len(shape) < min_ndim or 0 in shape:
        return 422
    with np.errstate(over="ignore"):
        array = np.array(value, dtype=np.float64).astype(np.float32)
    if not bool(np.isfinite(array).all()):
        return 422
    return array


_cells = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e-45, 3.4e38, 1e39, -1e39, 2**64]),
    st.just(True),
    st.just("x"),
    st.none(),
)


@st.composite
def nested_arrays(draw: st.DrawFn) -> Any:
    """Regular arrays of rank 1-4 most of the time; sometimes one cell or row is changed to
    something ragged, empty, non-numeric or out of range."""
    rank = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    flat = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=1))
    array = np.resize(np.array(flat), shape).tolist()
    if draw(st.booleans()):
        # Break one place: a cell, or a whole row.
        path = [draw(st.integers(0, n - 1)) for n in shape[:-1]]
        row = array
        for index in path:
            row = row[index]
        if draw(st.booleans()):
            row[draw(st.integers(0, len(row) - 1))] = draw(_cells)
        else:
            row.append(draw(_cells))
    return array


@given(nested_arrays(), st.sampled_from([8, 64, 1 << 20]), st.booleans())
@settings(BASE, max_examples=400)
def test_arrays_are_what_a_strict_reader_makes_of_them(value: Any, chunk: int, whole: bool) -> None:
    body = json.dumps({"inputs": value, "seed": 1, "score_type": 'a "quoted" \u0022'}).encode()
    expected = reference(value)
    with chunks_of(chunk, small_bodies_whole=whole):
        result = read(body)
    if isinstance(expected, int):
        assert isinstance(result, ServiceError), result
        assert result.status == expected, result.message
        assert_refusal(result)
    else:
        assert not isinstance(result, ServiceError), result.message
        np.testing.assert_array_equal(result, expected)


@given(nested_arrays(), st.integers(1, 8))
@settings(BASE, max_examples=200)
def test_reading_in_chunks_gives_what_reading_whole_gives(value: Any, rows: int) -> None:
    body = json.dumps({"inputs": [value] * rows}).encode()
    whole = read(body)
    with chunks_of(16):
        chunked = read(body)
    if isinstance(whole, ServiceError):
        assert isinstance(chunked, ServiceError), "chunks accepted what the whole refused"
        assert chunked.status == whole.status, (chunked.message, whole.message)
    else:
        assert not isinstance(chunked, ServiceError), chunked.message
        np.testing.assert_array_equal(chunked, whole)


# --------------------------------------------------------------------------- cost

# Bodies built the way an attacker builds them: one cheap token repeated, maybe in a row, maybe
# with a poison token part way. The constant is the chunk the arrays are parsed in.
_tokens = st.sampled_from(
    [
        b"0",
        b"1e1",
        b"0.5",
        b"[]",
        b"[0]",
        b"[[]]",
        b"true",
        b'"x"',
        b"null",
        b"{}",
        b'"' + b"x" * 999 + b'"',
    ]
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    token = draw(_tokens)
    count = draw(st.integers(1, 400_000 // len(token)))
    poison = draw(st.sampled_from([b"", b'"s"', b"true", b"[1,2]", b"{}"]))
    where = draw(st.integers(0, count))
    items = [token] * count
    if poison:
        items.insert(where, poison)
    array = b"[" + b",".join(items) + b"]"
    if draw(st.booleans()):
        array = b"[" + array + b"]"
    return b'{"inputs": ' + array + b', "seed": 1}'


MIB = 1024 * 1024
CONSTANT = 32 * MIB  # a chunk's worth (1 MiB of text) of orjson objects and numpy temporaries


def peak_of(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


SMALL_CHUNK = 64 * 1024


@given(hostile_bodies())
@settings(BASE, max_examples=60)
def test_no_body_costs_more_than_8x_its_size_plus_a_chunk(body: bytes) -> None:
    # Chunks of 64 kB here, so that bodies of a few hundred kB show the bound: what one
    # chunk costs (~25x its text at worst) is the constant.
    with chunks_of(SMALL_CHUNK, small_bodies_whole=False):
        peak = peak_of(lambda: read(body, max_items=4096, max_item_values=64))
    allowed = 8 * len(body) + 32 * SMALL_CHUNK
    assert peak < allowed, f"{peak / MIB:.1f} MiB for {len(body) / MIB:.2f} MiB"


def test_a_large_body_costs_a_small_multiple_of_its_size() -> None:
    """The whole-body reader cost ~15x a body of short floats; chunked, an 8 MB one costs the
    float32 array it makes (4 bytes a number) and a chunk."""
    row = b"[" + b",".join([b"1e1"] * 500) + b"]"
    body = b'{"inputs": [' + b",".join([row] * 4096) + b"]}"
    peak = peak_of(lambda: read(body, max_items=4096, max_item_values=500))
    assert peak < 2 * len(body) + CONSTANT, f"{peak / MIB:.1f} MiB for {len(body) / MIB:.1f} MiB"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # a string in the array, its two quote bytes "paid for" by two \u0022 in another value
        (rb'{"inputs": [[1, "x"]], "s": "\u0022\u0022"}', 422),
        (rb'{"inputs": [[1, "x"]], "s\"\u0022": 1}', 422),
        (
            rb'{"inputs": [[' + b"1," * 2000 + b'"' + b"x" * 36_000 + rb'"]], "s": "\u0022\u0022"}',
            422,
        ),
        (rb'{"inputs": [[1, 2]], "s": "a\"b\u0022c", "k\"": true}', 200),
        (rb'{"inputs": [[1, 2]], "note": "\\u0022"}', 200),  # an escaped backslash, then text
        (rb'{"inputs": [[1, 2]], "o": {"t": "[\"x\"]"}}', 200),
    ],
)
def test_the_quote_count_lets_no_string_into_a_list_numpy_infers(
    body: bytes, expected: int
) -> None:
    """The small-body path parses whole and lets numpy infer a list's dtype only when every
    quote byte belongs to a key or a top-level string (`json_read._parse_small`); a string in
    a list, however disguised, is refused where it is, at a fixed cost."""
    peak = peak_of(lambda: read(body))
    result = read(body)
    if expected == 200:
        assert not isinstance(result, ServiceError), result.message
        np.testing.assert_array_equal(result, [[1, 2]])
    else:
        assert isinstance(result, ServiceError)
        assert result.status == expected
        assert "string" in result.message
    assert peak < 8 * len(body) + MIB
