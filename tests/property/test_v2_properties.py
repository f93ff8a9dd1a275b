"""Properties of the Open Inference Protocol's request parsing and binary tensor splitting.

The binary extension puts raw tensor bytes after a JSON header whose length comes in an HTTP
header, and each tensor's `binary_data_size` says how many bytes are its own. Whatever those
numbers claim, parsing must end in the protocol's 400 (a `V2Error`, or a `ServiceError` that
`v2_error` maps to 4xx), never in another exception (a 500); and a body whose numbers do add
up must give back exactly the bytes that were sent.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.api.errors import v2_error
from service.codecs.v2_json import (
    NUMERIC_DTYPES,
    InferRequest,
    decode_inputs,
    infer_response,
    parse_infer_request,
    split_body,
    wanted_outputs,
)
from service.errors import ServiceError, V2Error
from service.models.results import TensorsResult
from service.models.served_model import ServedModel
from service.models.v2_views import V2Model
from tests.property.conftest import PROFILE

# A numpy warning on a request path is noise in the server log for every such request.
pytestmark = pytest.mark.filterwarnings("error")

BASE = settings.get_profile(PROFILE)
MAX_DEPTH = 32  # ServiceSettings.max_json_depth's default


def assert_bad_request(error: V2Error | ServiceError) -> None:
    """What the client gets back for this error is a 4xx in the protocol's own body."""
    status = v2_error(error).status
    assert 400 <= status < 500, (status, error)


def parse_and_decode(body: bytes, header_length: str | None) -> dict[str, Any] | None:
    """parse_infer_request then decode_inputs, as serve_infer runs them; None when refused."""
    try:
        return decode_inputs(parse_infer_request(body, header_length, MAX_DEPTH))
    except (V2Error, ServiceError) as error:
        assert_bad_request(error)
        return None


# --------------------------------------------------------------------------- split_body

_digits = st.integers(0, 400).map(str)
header_lengths = st.one_of(
    st.none(),
    _digits,
    _digits.map(lambda d: f" {d}\t"),
    st.integers(-5, -1).map(str),
    st.text(max_size=6),
    st.sampled_from(["", "1e3", "0x10", "1_0", "١٢", "²", "+5", "5.0"]),
    # Longer than Python's int-from-str limit (4300 digits)
    st.integers(4290, 4400).map(lambda n: "9" * n),
)


def split_or_refusal(body: bytes, header_length: str | None) -> tuple[bytes, bytes] | V2Error:
    try:
        return split_body(body, header_length)
    except V2Error as error:
        return error


@settings(BASE, max_examples=100)
@given(st.binary(max_size=300), header_lengths)
# Found by this test: more than 4300 digits made int() raise ValueError (a 500).
@example(b"{}", "9" * 5000)
def test_split_body_splits_exactly_or_refuses(body: bytes, header_length: str | None) -> None:
    parts = split_or_refusal(body, header_length)
    if isinstance(parts, V2Error):
        assert parts.status == 400
        return
    head, tail = parts
    assert head + tail == body
    if header_length is None:
        assert tail == b""
    else:
        assert len(head) == int(header_length.strip())


# --------------------------------------------------------------------------- hostile requests

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=4)
)
_any_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
_shape = st.one_of(
    st.lists(st.integers(0, 4), max_size=4),  # zero-sized axes included
    st.integers(60, 70).map(lambda n: [1] * n),  # up to and beyond numpy's 64 axes
    st.lists(st.one_of(st.integers(-2, 2**64 - 1), st.booleans(), st.floats(0, 3)), max_size=3),
)
_datatype = st.sampled_from(sorted(NUMERIC_DTYPES))
_tensor_keys = ["name", "shape", "datatype", "data", "parameters"]


def _claimed_count(shape: Any) -> int | None:
    """The element count of a shape the parser would accept, when small enough to send."""
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        return None
    count = math.prod(shape)
    return count if count <= 64 else None


@st.composite
def hostile_tensors(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], bytes]:
    """A tensor and its binary bytes. Most are well formed around an odd shape (zero-sized,
    more axes than numpy allows, huge, negative) with exactly the data it claims, so that
    parsing gets past the simple checks; some have one entry missing or replaced by any JSON
    value, or binary bytes of the wrong length. Binary float bytes may decode to NaN/inf."""
    datatype = draw(_datatype)
    shape = draw(_shape)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    count = _claimed_count(shape)
    raw = b""
    if count is not None and draw(st.booleans(), label="binary"):
        size = count * NUMERIC_DTYPES[datatype].itemsize
        raw = draw(st.binary(min_size=size, max_size=size))
        tensor["parameters"] = {"binary_data_size": size}
    else:
        # Mostly finite numbers; NaN and inf (written as null) now and then.
        number = st.one_of(st.floats(-1e6, 1e6), st.floats())
        length = count if count is not None else draw(st.integers(0, 6))
        tensor["data"] = draw(st.lists(number, min_size=length, max_size=length))
    breakage = draw(st.sampled_from(["none"] * 4 + ["drop", "replace", "bytes"]))
    if breakage == "drop":
        tensor.pop(draw(st.sampled_from(_tensor_keys)), None)
    elif breakage == "replace":
        tensor[draw(st.sampled_from(_tensor_keys))] = draw(_any_json)
    elif breakage == "bytes":
        raw = draw(st.binary(max_size=16))
    return tensor, raw


# One time in ten (st.integers would favour its bounds, so a bound is not used as the flag).
rarely = st.sampled_from([False] * 9 + [True])


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[bytes, str | None]:
    names = draw(st.lists(st.sampled_from(["x", "z", "w"]), min_size=1, max_size=3))  # repeats
    tensors = [draw(hostile_tensors(name)) for name in names]
    inputs: Any = [tensor for tensor, _ in tensors]
    # The request-level fields are broken rarely: each refuses the request before any tensor.
    if draw(rarely):
        inputs = draw(_any_json)
    document: dict[str, Any] = {"inputs": inputs}
    for key in ("id", "parameters", "outputs"):
        if draw(rarely):
            document[key] = draw(_any_json)
    try:
        header = orjson.dumps(document)
    except orjson.JSONEncodeError:  # integers beyond 64 bits; Python's json writes them
        header = json.dumps(document).encode()
    tail = b"".join(raw for _, raw in tensors)
    length = None if not tail else str(len(header))
    if draw(rarely):
        length = draw(header_lengths)
    return header + tail, length


@settings(BASE, max_examples=100)
@given(hostile_requests())
# Found by this test: a shape of more than 64 axes made `reshape` raise ValueError (a 500).
@example(
    (
        orjson.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1]}]}
        ),
        None,
    )
)
def test_hostile_requests_are_refused_with_a_4xx(
    request_and_length: tuple[bytes, str | None],
) -> None:
    body, header_length = request_and_length
    arrays = parse_and_decode(body, header_length)
    if arrays is not None:
        for array in arrays.values():
            assert array.size > 0  # an empty tensor has nothing for the model to compute
            assert array.dtype == np.float32
            assert bool(np.isfinite(array).all())


@settings(BASE, max_examples=60)
@given(st.binary(max_size=200), header_lengths)
def test_arbitrary_bytes_are_refused_with_a_4xx(body: bytes, header_length: str | None) -> None:
    parse_and_decode(body, header_length)


# --------------------------------------------------------------------------- well-formed bodies


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, npt.NDArray[Any]]:
    """A datatype and a finite little-endian array of it; float values fit in float32."""
    datatype = draw(st.sampled_from(sorted(NUMERIC_DTYPES)))
    dtype = NUMERIC_DTYPES[datatype]
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    if dtype.kind != "f":
        return datatype, draw(hnp.arrays(dtype, shape))
    # FP64 values beyond float32 are refused, not converted; the hostile tests send those.
    if dtype.itemsize == 2:
        elements = st.floats(allow_nan=False, allow_infinity=False, width=16)
    else:
        elements = st.floats(allow_nan=False, allow_infinity=False, width=32)
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def well_formed_bodies(
    draw: st.DrawFn,
) -> tuple[bytes, str | None, dict[str, tuple[str, npt.NDArray[Any]]]]:
    """1-3 named tensors, each sent as binary or as JSON data; the body and its header length."""
    sent = draw(st.lists(tensors(), min_size=1, max_size=3))
    names = [f"t{index}" for index in range(len(sent))]
    inputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, (datatype, array) in zip(names, sent, strict=True):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if draw(st.booleans(), label=f"{name} binary"):
            raw = array.tobytes(order="C")
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            nested = draw(st.booleans(), label=f"{name} nested")  # both layouts are allowed
            entry["data"] = array.tolist() if nested else array.ravel().tolist()
        inputs.append(entry)
    header = orjson.dumps({"id": "p", "inputs": inputs})
    # Whitespace after the JSON is part of the header, not of the binary data.
    header += draw(st.sampled_from([b"", b" ", b"\n"]), label="padding")
    with_length = bool(chunks) or draw(st.booleans(), label="length")
    length = str(len(header)) if with_length else None
    return header + b"".join(chunks), length, dict(zip(names, sent, strict=True))


def _fp16_binary_case() -> tuple[bytes, str, dict[str, tuple[str, npt.NDArray[Any]]]]:
    array = np.array([[0.0, 1.5]], dtype="<f2")
    tensor = {"name": "t0", "datatype": "FP16", "shape": [1, 2]}
    header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 4}}]})
    return header + array.tobytes(), str(len(header)), {"t0": ("FP16", array)}


@settings(BASE, max_examples=60)
@given(well_formed_bodies())
# Found by this test: the float32-range check compared FP16 values with float32's max, which
# numpy casts to float16 (inf), with an overflow RuntimeWarning on every binary FP16 request.
@example(_fp16_binary_case())
def test_well_formed_bodies_round_trip_exactly(
    case: tuple[bytes, str | None, dict[str, tuple[str, npt.NDArray[Any]]]],
) -> None:
    body, header_length, sent = case
    arrays = decode_inputs(parse_infer_request(body, header_length, MAX_DEPTH))
    assert list(arrays) == list(sent)
    for name, (datatype, array) in sent.items():
        result = arrays[name]
        assert result.dtype == np.float32
        assert result.shape == array.shape
        if datatype == "FP32":
            assert result.tobytes() == array.tobytes()  # byte-exact, -0.0 and subnormals too
        else:
            assert result.tobytes() == array.astype(np.float32).tobytes()


_EMPTY_BINARY_TENSOR = orjson.dumps(
    {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [0, 64],
                "parameters": {"binary_data_size": 0},
            }
        ]
    }
)


@settings(BASE, max_examples=60)
@given(well_formed_bodies(), st.data())
def test_sizes_that_do_not_add_up_are_refused(
    case: tuple[bytes, str | None, dict[str, tuple[str, npt.NDArray[Any]]]],
    data: st.DataObject,
) -> None:
    body, header_length = _break_the_sizes(*case[:2], data)
    with pytest.raises((V2Error, ServiceError)) as refused:
        decode_inputs(parse_infer_request(body, header_length, MAX_DEPTH))
    assert isinstance(refused.value, V2Error | ServiceError)
    assert_bad_request(refused.value)


def test_an_empty_binary_tensor_is_refused() -> None:
    # Found by test_sizes_that_do_not_add_up_are_refused ("empty tensor"): a binary tensor of
    # shape [0, 64] and size 0 adds up, passed, and reached the model, whose scoring cannot
    # reshape an empty batch (a 500). JSON data of that shape was already refused.
    body = _EMPTY_BINARY_TENSOR
    with pytest.raises(V2Error, match="empty tensor") as refused:
        decode_inputs(parse_infer_request(body, str(len(body)), MAX_DEPTH))
    assert refused.value.status == 400


def _break_the_sizes(
    body: bytes, header_length: str | None, data: st.DataObject
) -> tuple[bytes, str | None]:
    """One change that makes a well-formed body's lengths disagree with each other."""
    length = len(body) if header_length is None else int(header_length)
    header, tail = body[:length], body[length:]
    document = orjson.loads(header)
    binary = [t for t in document["inputs"] if "parameters" in t]
    changes = ["add tail bytes", "empty tensor"]
    if tail:
        changes += ["drop tail bytes", "shift header length"]
    if binary:
        changes += ["change a binary_data_size"]
    change = data.draw(st.sampled_from(changes), label="change")
    if change == "add tail bytes":
        tail += data.draw(st.binary(min_size=1, max_size=9), label="extra")
        header_length = str(len(header))
    elif change == "drop tail bytes":
        tail = tail[: data.draw(st.integers(0, len(tail) - 1), label="keep")]
    elif change == "shift header length":
        header_length = str(length + data.draw(st.integers(-3, 3).filter(bool), label="shift"))
    elif change == "empty tensor":
        # Sizes that add up, for a tensor with no items: still not a request to serve.
        index = data.draw(st.integers(0, len(document["inputs"]) - 1), label="tensor")
        tensor = document["inputs"][index]
        tensor["shape"] = [0, *tensor["shape"][1:]]
        if "parameters" in tensor:
            before = document["inputs"][:index]
            start = sum(t["parameters"]["binary_data_size"] for t in before if "parameters" in t)
            size = tensor["parameters"]["binary_data_size"]
            tail = tail[:start] + tail[start + size :]
            tensor["parameters"]["binary_data_size"] = 0
        else:
            tensor["data"] = []
        header = orjson.dumps(document)
        header_length = str(len(header))
    else:
        tensor = data.draw(st.sampled_from(binary), label="tensor")
        size = tensor["parameters"]["binary_data_size"]
        tensor["parameters"]["binary_data_size"] = data.draw(
            st.integers(0, size + 16).filter(lambda n: n != size), label="size"
        )
        header = orjson.dumps(document)
        header_length = str(len(header))
    return header + tail, header_length


# --------------------------------------------------------------------------- responses


@st.composite
def model_results(draw: st.DrawFn) -> tuple[dict[str, npt.NDArray[Any]], list[bool], bool]:
    batch = draw(st.integers(1, 5))
    shape = (batch, 64)
    finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
    results = {
        "reconstruction": draw(hnp.arrays(np.float32, shape, elements=finite32)),
        "anomaly_score": draw(
            hnp.arrays(np.float64, batch, elements=st.floats(allow_nan=False, allow_infinity=False))
        ),
    }
    flags = draw(st.lists(st.booleans(), min_size=2, max_size=2))
    return results, flags, draw(st.booleans())


@settings(BASE, max_examples=40)
@given(model_results())
def test_binary_responses_split_back_into_the_same_bytes(
    bernoulli_model: ServedModel,
    case: tuple[dict[str, npt.NDArray[Any]], list[bool], bool],
) -> None:
    results, flags, name_outputs = case
    view = V2Model("digits-vae", "digits-vae", "model", bernoulli_model)
    outputs = (
        [
            {"name": name, "parameters": {"binary_data": flag}}
            for name, flag in zip(results, flags, strict=True)
        ]
        if name_outputs
        else None
    )
    request = InferRequest("r", {"binary_data_output": flags[0]}, [{}], outputs, b"")
    wanted = wanted_outputs(view, request)
    response = infer_response(view, request.id, wanted, TensorsResult(results))
    assert response.status == 200

    length = response.headers.get("Inference-Header-Content-Length")
    header, tail = split_body(response.body, length)
    offset = 0
    for entry, output in zip(orjson.loads(header)["outputs"], wanted, strict=True):
        sent = results[entry["name"]]
        dtype = np.dtype("<f4") if entry["datatype"] == "FP32" else np.dtype("<f8")
        assert entry["shape"] == list(sent.shape)
        if output.binary:
            size = entry["parameters"]["binary_data_size"]
            received = np.frombuffer(tail, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        else:
            # JSON numbers: float32 written by orjson in their shortest float32 repr
            received = np.asarray(entry["data"], dtype=np.float64).astype(dtype)
        assert received.tobytes() == np.ascontiguousarray(sent, dtype=dtype).ravel().tobytes()
    assert offset == len(tail)
