"""service.codecs.json_simple: the common body read in C either gives exactly what the general
reader (service.codecs.json_read) gives, or steps aside (None) for it to decide."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.codecs.json_read import array_field, parse_json_object
from service.codecs.json_simple import read_simple_batch
from service.errors import ServiceError

MAX_DEPTH = 32


def general(body: bytes) -> tuple[np.ndarray, dict[str, Any]] | ServiceError:
    try:
        payload = parse_json_object(body, max_depth=MAX_DEPTH)
        array = array_field(payload, "inputs")
    except ServiceError as error:
        return error
    assert array is not None
    return array, {key: value for key, value in payload.items() if key != "inputs"}


def assert_agrees(body: bytes) -> bool:
    """True when the simple reader took the body (and then agreed to the bit)."""
    expected = general(body)
    if isinstance(expected, ServiceError):
        # Refused by the general reader: the simple one steps aside, or refuses alike (only
        # finish_array's checks, which both share, can refuse there).
        try:
            simple = read_simple_batch(body, "inputs", MAX_DEPTH, None)
        except ServiceError as error:
            assert (error.status, error.message) == (expected.status, expected.message)  # noqa: PT017
        else:
            assert simple is None, body[:80]
        return True
    simple = read_simple_batch(body, "inputs", MAX_DEPTH, None)
    if simple is None:
        return False
    array, others = simple
    assert array.dtype == expected[0].dtype == np.float32
    assert array.shape == expected[0].shape
    assert array.tobytes() == expected[0].tobytes()
    assert others == expected[1]
    assert all(type(others[key]) is type(expected[1][key]) for key in others)
    return True


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [[1, 2.5, -0.0, 1e-300, 18446744073709551615]]}',
        b'{"inputs": [[0.1, 0.2], [3, 4]], "score_type": "recon_mse", "per_feature": true}',
        b'{"seed": 7, "inputs": [[1]], "sample": false, "temperature": null}',
        b'{"inputs": [[3.4e38, -3.4e38]]}',
        b'{"inputs": [[3.5e38]]}',  # beyond float32: the shared check refuses it, same words
        b' \n{"inputs":[[1,2]]}\t',
    ],
)
def test_the_simple_form_is_read_as_the_general_reader_reads_it(body: bytes) -> None:
    assert assert_agrees(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [[1, 2], [3]]}',  # ragged
        b'{"inputs": [[1, [2]]]}',  # nested deeper
        b'{"inputs": [[[1, 2]], [[3, 4]]]}',  # three levels of arrays
        b'{"inputs": [[1, {"a": 2}]]}',
        b'{"inputs": [{"a": 1}]}',
        b'{"inputs": [[1]], "note": "[[{"}',  # brackets in a string are text
        b'{"inputs": [[1, true]]}',
        b'{"inputs": [[1, null]]}',
        b'{"inputs": [[1, "2"]]}',
        b'{"inputs": [[1e400]]}',
        b'{"inputs": [[1180591620717411303424]]}',  # beyond 64 bits
        b'{"inputs": [[1, 2]], "inputs": [[5, 6]]}',  # duplicate key: the last one counts
        b'{"inputs": [[1]], "extra": [1, 2]}',
        b'{"inputs": [[1]], "extra": {"a": 1}}',
        b'{"inputs": [1, 2]}',
        b'{"inputs": [[]]}',
        b'{"inputs": []}',
        b'{"inputs": [[1]]} x',
        b'{"inputs": [[1,]]}',
        b"[[1]]",
        b'{"other": [[1]]}',
        b'\xef\xbb\xbf{"inputs": [[1]]}',
        b'{"inputs": [[1]], "s": "\xff"}',
    ],
)
def test_anything_else_is_left_to_the_general_reader(body: bytes) -> None:
    assert read_simple_batch(body, "inputs", MAX_DEPTH, None) is None


def test_a_batch_over_the_nesting_limit_or_the_item_limit_is_left_alone() -> None:
    many = orjson.dumps({"inputs": [[1.0, 2.0]] * 100})  # many items: still three deep
    assert assert_agrees(many)
    assert read_simple_batch(many, "inputs", 3, None) is not None
    assert read_simple_batch(many, "inputs", 2, None) is None  # the general reader refuses it
    deep = b'{"inputs": [[1, ' + b"[" * 2000 + b"]" * 2000 + b"]]}"
    assert read_simple_batch(deep, "inputs", MAX_DEPTH, None) is None
    three = orjson.dumps({"inputs": [[1.0]] * 3})
    assert read_simple_batch(three, "inputs", MAX_DEPTH, 2) is None
    assert read_simple_batch(three, "inputs", MAX_DEPTH, 3) is not None


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    st.sampled_from([True, None, "x"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(numbers, min_size=0, max_size=5), min_size=0, max_size=4),
    st.dictionaries(
        st.sampled_from(["seed", "sample", "score_type", "n"]),
        st.one_of(st.integers(-5, 2**66), st.booleans(), st.text(max_size=5), st.none()),
        max_size=3,
    ),
)
def test_any_body_is_either_read_the_same_or_left_alone(
    rows: list[list[Any]], others: dict[str, Any]
) -> None:
    assert_agrees(json.dumps({"inputs": rows, **others}).encode())
