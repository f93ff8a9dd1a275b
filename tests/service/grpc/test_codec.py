"""service.grpc.codec: a ModelInferRequest read into the data plane's types, and every lie a
hostile message can tell refused as a 400 (INVALID_ARGUMENT) naming the field, before any
cost that grows with what the message claims."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.errors import InvalidInput, V2Error
from service.grpc import inference_pb2 as pb
from service.grpc.codec import (
    infer_response_message,
    message_bytes,
    parameter_value,
    read_infer_message,
)
from service.models.repository import ModelRepository
from service.models.results import TensorsResult
from service.models.v2_views import V2Model, find_model
from service.settings import ServiceSettings
from tests.bundles import committed_repository

ROWS = np.arange(2 * 64, dtype=np.float32).reshape(2, 64) / 128


@pytest.fixture(scope="module")
def repository() -> ModelRepository:
    return ModelRepository.load(ServiceSettings(model_repository=committed_repository()))


@pytest.fixture(scope="module")
def view(repository: ModelRepository) -> V2Model:
    return find_model(repository, "digits-vae", None)


def raw_request(rows: np.ndarray[Any, Any], datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits-vae")
    request.inputs.add(name="x", datatype=datatype, shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


def test_raw_and_typed_values_read_the_same(view: V2Model) -> None:
    raw = read_infer_message(view, raw_request(ROWS))
    typed_request = pb.ModelInferRequest(model_name="digits-vae", id="r1")
    tensor = typed_request.inputs.add(name="x", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
    typed = read_infer_message(view, typed_request)
    np.testing.assert_array_equal(raw.items, typed.items)
    assert raw.items.dtype == np.float32
    assert typed.request_id == "r1"
    assert raw.request_id is None
    assert [w.binary for w in raw.wanted] == [True, True]  # raw in, raw out
    assert [w.binary for w in typed.wanted] == [False, False]


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("INT8", "int_contents", [-3, 0, 5]),
        ("UINT16", "uint_contents", [0, 7, 65535]),
        ("INT64", "int64_contents", [-(2**40), 0, 2**40]),
        ("FP64", "fp64_contents", [0.5, -1.25, 1e30]),
    ],
)
def test_every_numeric_datatype_in_its_typed_field(
    view: V2Model, datatype: str, field: str, values: list[float]
) -> None:
    request = pb.ModelInferRequest(model_name="digits-vae")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, 64])
    getattr(tensor.contents, field).extend(values * 21 + values[:1])
    items = read_infer_message(view, request).items
    assert items.dtype == np.float32
    np.testing.assert_array_equal(items.ravel()[:3], np.asarray(values, np.float32))


def _tensor(request: pb.ModelInferRequest) -> Any:
    return request.inputs[0]


def _add_input(request: pb.ModelInferRequest, name: str) -> None:
    request.inputs.add(name=name, datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"\0\0\0\0")


Mutation = Callable[[pb.ModelInferRequest], object]
HOSTILE: dict[str, tuple[Mutation, str]] = {
    "no inputs": (lambda r: r.ClearField("inputs"), "inputs is required"),
    "nameless input": (lambda r: setattr(_tensor(r), "name", ""), "name is required"),
    "rank 33": (
        lambda r: _tensor(r).shape.extend([1] * 31),
        "more than 32 axes",
    ),
    "negative axis": (
        lambda r: _tensor(r).shape.__setitem__(0, -2),
        "non-negative",
    ),
    "huge shape": (
        lambda r: _tensor(r).shape.__setitem__(0, 2**62),
        "raw_input_contents holds 512 bytes",
    ),
    "empty tensor": (lambda r: _tensor(r).shape.__setitem__(0, 0), "empty tensor"),
    "one byte short": (
        lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-1]),
        "holds 511 bytes",
    ),
    "unknown datatype": (lambda r: setattr(_tensor(r), "datatype", "FP8"), "unknown datatype"),
    "BYTES": (lambda r: setattr(_tensor(r), "datatype", "BYTES"), "BYTES tensors"),
    "BOOL": (lambda r: setattr(_tensor(r), "datatype", "BOOL"), "BOOL tensors"),
    "raw and contents": (
        lambda r: _tensor(r).contents.fp32_contents.append(1.0),
        "not both",
    ),
    "fewer raw entries than inputs": (
        lambda r: r.inputs.add(name="y", datatype="FP32", shape=[1]),
        "2 inputs",
    ),
    "input named twice": (lambda r: _add_input(r, "x"), "more than once"),
    "wrong input name": (lambda r: setattr(_tensor(r), "name", "z"), "exactly one input"),
    "unknown output": (lambda r: r.outputs.add(name="secrets"), "has no output"),
    "output twice": (
        lambda r: (r.outputs.add(name="anomaly_score"), r.outputs.add(name="anomaly_score")),
        "more than once",
    ),
    "score type not a string": (
        lambda r: setattr(r.parameters["score_type"], "int64_param", 3),
        "score_type must be a string_param",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_messages_are_refused_naming_the_field(view: V2Model, case: str) -> None:
    mutate, expected = HOSTILE[case]
    request = raw_request(ROWS)
    mutate(request)
    with pytest.raises(V2Error) as caught:
        read_infer_message(view, request)
    assert caught.value.status == 400
    assert expected in caught.value.message


def test_values_the_model_cannot_take_are_refused(view: V2Model) -> None:
    nan = ROWS.copy()
    nan[1, 3] = np.nan
    with pytest.raises(V2Error, match="non-finite value at flat index 67"):
        read_infer_message(view, raw_request(nan))
    too_big = ROWS.astype(np.float64)
    too_big[0, 0] = 1e300
    with pytest.raises(V2Error, match="outside the float32 range"):
        read_infer_message(view, raw_request(too_big, "FP64"))
    request = pb.ModelInferRequest(model_name="digits-vae")
    tensor = request.inputs.add(name="x", datatype="INT8", shape=[1, 64])
    tensor.contents.int_contents.extend([300] + [0] * 63)  # an int32 that is no INT8
    with pytest.raises(V2Error, match="outside the INT8 range"):
        read_infer_message(view, request)
    request = pb.ModelInferRequest(model_name="digits-vae")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    tensor.contents.fp64_contents.extend([0.0] * 64)
    with pytest.raises(V2Error, match=r"takes contents\.fp32_contents, not contents\.fp64"):
        read_infer_message(view, request)
    request = pb.ModelInferRequest(model_name="digits-vae")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 64])
    with pytest.raises(V2Error, match="raw_input_contents only"):
        read_infer_message(view, request)
    wrong_width = np.zeros((2, 5), np.float32)
    with pytest.raises(InvalidInput, match="expected shape"):
        read_infer_message(view, raw_request(wrong_width))


def test_ten_thousand_tensors_are_refused_quickly(view: V2Model) -> None:
    request = pb.ModelInferRequest(model_name="digits-vae")
    for index in range(10_000):
        request.inputs.add(name=f"x{index}", datatype="FP32", shape=[1])
        request.raw_input_contents.append(b"\0\0\0\0")
    started = time.perf_counter()
    with pytest.raises(V2Error, match="exactly one input"):
        read_infer_message(view, request)
    assert time.perf_counter() - started < 2.0  # linear in the tensors, no more


def test_the_answer_carries_what_was_asked(view: V2Model) -> None:
    request = raw_request(ROWS)
    request.id = "answer-1"
    request.outputs.add(name="anomaly_score")
    decoded = read_infer_message(view, request)
    result = TensorsResult({"anomaly_score": np.array([0.5, -1.0])})
    response = infer_response_message(view, decoded, result)
    assert response.id == "answer-1"
    assert response.model_name == "digits-vae"
    assert response.model_version == "1"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("anomaly_score", "FP64", [2])
    ]
    assert np.frombuffer(response.raw_output_contents[0], "<f8").tolist() == [0.5, -1.0]
    assert message_bytes(request) == request.ByteSize() > 512


def test_parameter_values() -> None:
    assert parameter_value(pb.InferParameter(bool_param=True)) is True
    assert parameter_value(pb.InferParameter(int64_param=-5)) == -5
    assert parameter_value(pb.InferParameter(string_param="a")) == "a"
    assert parameter_value(pb.InferParameter(double_param=0.5)) == 0.5
    assert parameter_value(pb.InferParameter()) is None
