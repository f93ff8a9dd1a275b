"""The Open Inference Protocol's REST body: JSON tensors, and the binary tensor data extension
(raw little-endian bytes after a JSON header whose length the `Inference-Header-Content-Length`
header gives), decoded into one float32 batch and encoded back from a result's tensors.

Bad input is a `V2Error` (400, the protocol's `{"error": message}`) naming the tensor and field;
every count is bounded before it is used (rank, declared sizes against the bytes there are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.arrays import FloatArray
from service.codecs import json_read, json_write, media
from service.codecs.json_read import NumberArray
from service.codecs.wire import INLINE_DECODE_BYTES, INLINE_NPY_BYTES, RawResponse
from service.errors import ServiceError, V2Error, excerpt
from service.models.results import TensorsResult
from service.models.v2_views import TensorSpec, V2Model

# Datatypes accepted for inputs (converted to float32), as little-endian numpy dtypes.
NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
OUTPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
# Known to the protocol, refused here with a reason rather than "unknown".
REFUSED_DTYPES = {
    "BOOL": "BOOL tensors are not numbers this model can take; send FP32",
    "BYTES": "BYTES tensors are not numbers this model can take; send FP32",
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Axes a tensor may declare: far more than any model of ours has, and a bound on the product.
MAX_RANK = 32


def _bad(message: str) -> V2Error:
    return V2Error(400, message)


# --------------------------------------------------------------------------- request parsing


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]] | None
    binary: bytes  # the bytes after the JSON header (empty without the extension)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) by the Inference-Header-Content-Length header."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise _bad(
            "Inference-Header-Content-Length must be a non-negative integer, got "
            f"{excerpt(header_length)}"
        )
    digits = text.lstrip("0") or "0"
    # More digits than the body's own length has means a longer header than the body; testing
    # that first also keeps int() clear of Python's 4300-digit limit (a ValueError, a 500).
    if len(digits) > len(str(len(body))) or int(digits) > len(body):
        shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} digits)"
        raise _bad(
            f"Inference-Header-Content-Length is {shown} but the body has only {len(body)} bytes"
        )
    length = int(digits)
    return body[:length], body[length:]


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object")
    return value


def decodes_inline(body: bytes, header_length: str | None) -> bool:
    """Small bodies decode on the event loop (service.codecs.wire.decodes_inline): JSON up to
    64 kB, and binary tensors up to 1 MiB behind a short JSON header, which cost a copy and a
    finiteness check, as npy does. Measured on 784-input S5 (64 items a request): 1,101 req/s
    when these decoded in the executor (`make bench`), 1,229 inline (`python -m
    bench.http_bench --scenarios S5 --models 784`)."""
    if len(body) <= INLINE_DECODE_BYTES:
        return True
    if header_length is None or len(body) > INLINE_NPY_BYTES:
        return False
    length = header_length.strip()
    return length.isdigit() and len(length) <= 6 and int(length) <= INLINE_DECODE_BYTES


def parse_infer_request(body: bytes, header_length: str | None, max_depth: int) -> InferRequest:
    header, binary = split_body(body, header_length)
    payload = json_read.parse_json_object(header, max_depth=max_depth)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("id must be a string")
    parameters = _object(payload.get("parameters"), "parameters")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("inputs is required: a non-empty list of input tensors")
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise _bad(f"inputs[{index}] must be a JSON object")
    outputs = payload.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise _bad("outputs must be a list of requested outputs")
        for index, wanted in enumerate(outputs):
            if not isinstance(wanted, dict) or not isinstance(wanted.get("name"), str):
                raise _bad(f"outputs[{index}] must be an object with a string name")
    return InferRequest(request_id, parameters, inputs, outputs, binary)


def _shape(tensor: dict[str, Any], name: str) -> tuple[int, ...]:
    """The declared shape, checked in rank before anything is computed from it (a shape of
    32,000 axes once cost seconds of big-integer products on the event loop)."""
    shape = tensor.get("shape")
    if isinstance(shape, NumberArray):
        if shape.count_values() > MAX_RANK:
            raise _bad(f"input {excerpt(name)}: shape has more than {MAX_RANK} axes")
        shape = shape.to_list()
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise _bad(
            f"input {excerpt(name)}: shape must be a list of at most {MAX_RANK} non-negative "
            "integers"
        )
    return tuple(shape)


def input_dtype(datatype: Any, name: str) -> np.dtype[Any]:
    if not isinstance(datatype, str):
        raise _bad(f'input {excerpt(name)}: datatype must be a string such as "FP32"')
    if datatype in REFUSED_DTYPES:
        raise _bad(f"input {excerpt(name)}: {REFUSED_DTYPES[datatype]}")
    if datatype not in NUMERIC_DTYPES:
        raise _bad(
            f"input {excerpt(name)}: unknown datatype {excerpt(datatype)}; accepted: "
            f"{sorted(NUMERIC_DTYPES)}"
        )
    return NUMERIC_DTYPES[datatype]


def to_float32(values: npt.NDArray[Any], name: str) -> FloatArray:
    """Any numeric array as float32, refusing NaN/Inf and values beyond the float32 range."""
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not bool(finite.all()):
            index = int(np.flatnonzero(~finite)[0])
            raise _bad(f"input {excerpt(name)}: non-finite value at flat index {index}")
    # Only float64 can exceed float32; comparing FP16 with float32's max would cast that max
    # to float16 (inf), with an overflow warning on every FP16 request.
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:
        too_big = np.abs(values) > _FLOAT32_MAX
        if bool(too_big.any()):
            index = int(np.flatnonzero(too_big)[0])
            raise _bad(
                f"input {excerpt(name)}: value at flat index {index} is outside the float32 range"
            )
    return np.ascontiguousarray(values, dtype=np.float32)


def decode_inputs(request: InferRequest) -> dict[str, FloatArray]:
    """Every input tensor as a float32 array of its declared shape."""
    arrays: dict[str, FloatArray] = {}
    offset = 0
    for index, tensor in enumerate(request.inputs):
        name = tensor.get("name")
        if not isinstance(name, str):
            raise _bad(f"inputs[{index}]: name must be a string")
        if name in arrays:
            raise _bad(f"input {excerpt(name)} is given more than once")
        shape = _shape(tensor, name)
        dtype = input_dtype(tensor.get("datatype"), name)
        count = math.prod(shape)  # at most MAX_RANK factors below 2**64: bounded
        parameters = _object(tensor.get("parameters"), f"input {excerpt(name)}: parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise _bad(
                    f"input {excerpt(name)}: binary_data_size must be a non-negative integer"
                )
            if "data" in tensor:
                raise _bad(f"input {excerpt(name)}: give either data or binary_data_size, not both")
            if count == 0:  # as for JSON data: an empty batch has nothing to compute
                raise _bad(f"input {excerpt(name)}: empty tensor; send at least one item")
            if size != count * dtype.itemsize:
                raise _bad(
                    f"input {excerpt(name)}: binary_data_size is {size} bytes but shape "
                    f"{list(shape)} of {tensor['datatype']} needs {count * dtype.itemsize}"
                )
            if offset + size > len(request.binary):
                raise _bad(
                    f"input {excerpt(name)}: binary data ends after {len(request.binary)} bytes, "
                    f"{offset + size} needed"
                )
            raw = np.frombuffer(request.binary, dtype=dtype, count=count, offset=offset)
            offset += size
            values = to_float32(raw, name)
        else:
            values = _json_data(tensor.get("data"), name, count)
        try:
            arrays[name] = values.reshape(shape)
        except ValueError:  # the count fits, the layout does not: more axes than numpy's 64
            raise _bad(
                f"input {excerpt(name)}: shape has {len(shape)} axes, too many for an array"
            ) from None
    if offset != len(request.binary):
        raise _bad(
            f"binary data is {len(request.binary)} bytes but the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return arrays


def _json_data(data: Any, name: str, count: int) -> FloatArray:
    if not isinstance(data, list | NumberArray):
        raise _bad(f"input {excerpt(name)}: data must be a (flat or nested) list of numbers")
    if count == 0:
        raise _bad(f"input {excerpt(name)}: empty tensor; send at least one item")
    if isinstance(data, NumberArray) and data.count_values() > count:
        # Counted on the text: more numbers than the shape holds are refused unparsed.
        raise _bad(
            f"input {excerpt(name)}: data has {data.count_values()} values but its shape "
            f"needs {count}"
        )
    try:
        # The service's own JSON array reader: refuses booleans, strings, ragged lists,
        # NaN/Inf and values beyond float32, and returns float32.
        array = json_read.array_field({"data": data}, "data", min_ndim=1)
    except ServiceError as error:
        raise _bad(f"input {excerpt(name)}: {error.message}") from error
    assert array is not None
    if array.size != count:
        raise _bad(
            f"input {excerpt(name)}: data has {array.size} values but its shape needs {count}"
        )
    return array.ravel()


def _flag(parameters: dict[str, Any], key: str, what: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{what}: {key} must be true or false")
    return value


@dataclass(frozen=True)
class WantedOutput:
    spec: TensorSpec
    binary: bool


def requested_output(
    view: V2Model, chosen: list[WantedOutput], name: str, binary: bool
) -> WantedOutput:
    """The output a request names, refused when the model has none of that name or the
    request names it twice (every transport of the protocol checks its outputs here)."""
    spec = next((spec for spec in view.outputs if spec.name == name), None)
    if spec is None:
        names = [spec.name for spec in view.outputs]
        raise _bad(f"model {view.name!r} has no output {excerpt(name)}; outputs: {names}")
    if any(w.spec.name == name for w in chosen):
        raise _bad(f"output {excerpt(name)} is requested more than once")
    return WantedOutput(spec, binary)


def wanted_outputs(view: V2Model, request: InferRequest) -> list[WantedOutput]:
    binary_default = _flag(request.parameters, "binary_data_output", "parameters")
    if request.outputs is None:
        return [WantedOutput(spec, binary_default) for spec in view.outputs]
    chosen: list[WantedOutput] = []
    for entry in request.outputs:
        name = entry["name"]
        output = requested_output(view, chosen, name, binary_default)
        parameters = _object(entry.get("parameters"), f"output {excerpt(name)}: parameters")
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise _bad(f"output {excerpt(name)}: binary_data must be true or false")
        chosen.append(WantedOutput(output.spec, binary))
    return chosen


def single_input(view: V2Model, arrays: dict[str, FloatArray]) -> FloatArray:
    expected = view.inputs[0].name
    if set(arrays) != {expected}:
        raise _bad(
            f"model {view.name!r} takes exactly one input named {expected!r}; got "
            f"{[excerpt(key, 32) for key in list(arrays)[:4]]}"
        )
    array = arrays[expected]
    if array.ndim < 2:
        raise _bad(
            f"input {expected!r}: shape needs a leading batch axis, expected "
            f"{list(view.inputs[0].shape)}, got {list(array.shape)}"
        )
    if view.role == "decoder":
        return view.model.check_latents(array, field=expected)
    return view.model.check_inputs(array, field=expected)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class DecodedInfer:
    """An infer request read whole, by any transport of the protocol: its id, the outputs it
    wants, its one input batch (checked against the model), and the score it asks for."""

    request_id: str | None
    wanted: list[WantedOutput]
    items: FloatArray
    score_type: str | None


def read_infer_request(
    view: V2Model, body: bytes, header_length: str | None, max_depth: int
) -> DecodedInfer:
    request = parse_infer_request(body, header_length, max_depth)
    wanted = wanted_outputs(view, request)
    score_type = request.parameters.get("score_type")
    if score_type is not None and not isinstance(score_type, str):
        raise _bad("parameters: score_type must be a string")
    items = single_input(view, decode_inputs(request))
    return DecodedInfer(request.id, wanted, items, score_type)


def infer_response(
    view: V2Model,
    request_id: str | None,
    wanted: list[WantedOutput],
    result: TensorsResult,
) -> RawResponse:
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in wanted:
        spec = output.spec
        array = np.ascontiguousarray(result.tensors[spec.name], dtype=OUTPUT_DTYPES[spec.datatype])
        entry: dict[str, Any] = {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": list(array.shape),
        }
        if output.binary:
            raw = array.tobytes(order="C")
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel()
        outputs.append(entry)
    payload: dict[str, Any] = {"model_name": view.name, "model_version": view.model.version}
    if request_id is not None:
        payload["id"] = request_id
    payload["outputs"] = outputs
    header = json_write.json_bytes(payload)
    if not chunks:
        return RawResponse(200, media.JSON_MEDIA_TYPE, header)
    return RawResponse(
        200,
        "application/octet-stream",
        b"".join([header, *chunks]),
        {"Inference-Header-Content-Length": str(len(header))},
    )
