"""The Open Inference Protocol's gRPC messages, to and from the data plane's types: a
`ModelInferRequest` (values in typed `contents`, or as little-endian bytes in
`raw_input_contents`) becomes the same `DecodedInfer` a REST body does, and a result's tensors
become a `ModelInferResponse`.

The message arrives parsed (grpcio read it, bounded by the server's message size limit), so
what is left to bound is what its fields claim: rank, counts against the values there are,
dtypes, every value finite and within float32. Bad input is a `V2Error` naming the tensor and
field, which the servicer answers INVALID_ARGUMENT.

Outputs go back the way inputs came: raw bytes in `raw_output_contents` when the request used
`raw_input_contents` (what Triton's clients send, and the only way they read outputs), typed
`contents` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from service.codecs.v2_json import (
    MAX_RANK,
    OUTPUT_DTYPES,
    DecodedInfer,
    WantedOutput,
    input_dtype,
    requested_output,
    single_input,
    to_float32,
)
from service.errors import V2Error, excerpt
from service.grpc import inference_pb2 as pb
from service.models.results import TensorsResult
from service.models.v2_views import V2Model

# The typed field that carries each datatype's values (the specification's table); FP16 has
# none and travels as raw bytes only.
CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
# The numpy type each typed field holds, which its values are read as before the range check.
FIELD_DTYPES: dict[str, np.dtype[Any]] = {
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
}
OUTPUT_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}

Parameters = Mapping[str, pb.InferParameter]


def _bad(message: str) -> V2Error:
    return V2Error(400, message)


def parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    """The one value an InferParameter holds (None when none is set)."""
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def _shape(tensor: pb.ModelInferRequest.InferInputTensor, name: str) -> tuple[int, ...]:
    if len(tensor.shape) > MAX_RANK:
        raise _bad(f"input {excerpt(name)}: shape has more than {MAX_RANK} axes")
    shape = tuple(tensor.shape)
    if any(n < 0 for n in shape):
        raise _bad(f"input {excerpt(name)}: shape must be non-negative integers, got {shape}")
    return shape


def _set_fields(contents: pb.InferTensorContents) -> list[str]:
    return [descriptor.name for descriptor, _ in contents.ListFields()]


def _typed_values(
    tensor: pb.ModelInferRequest.InferInputTensor, name: str, dtype: np.dtype[Any], count: int
) -> npt.NDArray[Any]:
    """The values in the typed field of the tensor's datatype, checked against its shape and
    its datatype's range (INT8 values travel as int32s, and may not fit an INT8)."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None or field not in FIELD_DTYPES:  # FP16 has no typed field
        raise _bad(
            f"input {excerpt(name)}: {tensor.datatype} values travel in raw_input_contents only"
        )
    present = _set_fields(tensor.contents)
    stray = [f for f in present if f != field]
    if stray:
        raise _bad(
            f"input {excerpt(name)}: datatype {tensor.datatype} takes contents.{field}, "
            f"not contents.{stray[0]}"
        )
    container = getattr(tensor.contents, field)
    if len(container) != count:
        raise _bad(
            f"input {excerpt(name)}: contents.{field} has {len(container)} values but shape "
            f"{list(tensor.shape)} needs {count}"
        )
    values = np.array(container, dtype=FIELD_DTYPES[field])
    if dtype.kind in "iu" and dtype.itemsize < values.dtype.itemsize:
        info = np.iinfo(dtype)
        outside = (values < info.min) | (values > info.max)
        if bool(outside.any()):
            index = int(np.flatnonzero(outside)[0])
            raise _bad(
                f"input {excerpt(name)}: value at flat index {index} is outside the "
                f"{tensor.datatype} range"
            )
    return values


def _raw_values(
    tensor: pb.ModelInferRequest.InferInputTensor,
    name: str,
    dtype: np.dtype[Any],
    count: int,
    raw: bytes,
) -> npt.NDArray[Any]:
    if _set_fields(tensor.contents):
        raise _bad(
            f"input {excerpt(name)}: give its values in raw_input_contents or in contents, not both"
        )
    if len(raw) != count * dtype.itemsize:
        raise _bad(
            f"input {excerpt(name)}: raw_input_contents holds {len(raw)} bytes but shape "
            f"{list(tensor.shape)} of {tensor.datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count)


def decode_inputs(message: pb.ModelInferRequest) -> dict[str, FloatArray]:
    """Every input tensor as a float32 array of its declared shape."""
    inputs = message.inputs
    if not inputs:
        raise _bad("inputs is required: a non-empty list of input tensors")
    raw = message.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise _bad(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs: send one "
            "per input, in order, or none"
        )
    arrays: dict[str, FloatArray] = {}
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if not name:
            raise _bad(f"inputs[{index}]: name is required")
        if name in arrays:
            raise _bad(f"input {excerpt(name)} is given more than once")
        shape = _shape(tensor, name)
        dtype = input_dtype(tensor.datatype, name)
        count = math.prod(shape)  # at most MAX_RANK factors below 2**63: bounded
        if count == 0:
            raise _bad(f"input {excerpt(name)}: empty tensor; send at least one item")
        values = (
            _raw_values(tensor, name, dtype, count, raw[index])
            if raw
            else _typed_values(tensor, name, dtype, count)
        )
        try:
            arrays[name] = to_float32(values, name).reshape(shape)
        except ValueError:  # the count fits, the layout does not: more axes than numpy's 64
            raise _bad(
                f"input {excerpt(name)}: shape has {len(shape)} axes, too many for an array"
            ) from None
    return arrays


def wanted_outputs(
    view: V2Model,
    requested: Iterable[pb.ModelInferRequest.InferRequestedOutputTensor],
    raw: bool,
) -> list[WantedOutput]:
    """The outputs asked for (every output when none is named); `binary` here means raw
    bytes in `raw_output_contents`."""
    chosen: list[WantedOutput] = []
    for entry in requested:
        chosen.append(requested_output(view, chosen, entry.name, raw))
    return chosen or [WantedOutput(spec, raw) for spec in view.outputs]


def read_infer_message(view: V2Model, message: pb.ModelInferRequest) -> DecodedInfer:
    """A ModelInferRequest decoded for the model it names, as read_infer_request decodes a
    REST body."""
    score = message.parameters.get("score_type")
    score_type = None if score is None else parameter_value(score)
    if score_type is not None and not isinstance(score_type, str):
        raise _bad("parameters: score_type must be a string_param")
    raw = len(message.raw_input_contents) > 0
    wanted = wanted_outputs(view, message.outputs, raw)
    items = single_input(view, decode_inputs(message))
    return DecodedInfer(message.id or None, wanted, items, score_type)


def infer_response_message(
    view: V2Model, decoded: DecodedInfer, result: TensorsResult
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=view.name, model_version=view.model.version, id=decoded.request_id or ""
    )
    for output in decoded.wanted:
        spec = output.spec
        array = np.ascontiguousarray(result.tensors[spec.name], dtype=OUTPUT_DTYPES[spec.datatype])
        tensor = response.outputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
        if output.binary:
            response.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, OUTPUT_FIELDS[spec.datatype]).extend(array.ravel().tolist())
    return response


def message_bytes(message: pb.ModelInferRequest) -> int:
    """The message's size on the wire (computed in C), charged to the worker's body budget
    like a REST body's length."""
    return int(message.ByteSize())
