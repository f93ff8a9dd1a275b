"""The mean path as one onnxruntime graph: preprocessing, the encoder, the decoder on the code's
mean and the inverse preprocessing, composed at load time from the bundle's own two graphs.

Most requests take this path (`/reconstruct`, `/anomaly-score` with the reconstruction error,
per-feature errors): four numpy steps and two onnxruntime calls become one call. Measured with
timeit on make bench's models, one item (bench/RESULTS.md has the HTTP figures): the default
64-input model's reconstruct 85.5 -> 45.0 us, the 784-input model's 124.3 -> 83.0 us. The graph
does the same float32 operations (Sub, Div, Max, Min; Mul, Add) as `Preprocessing`, so its
answers equal the two-graph path's bit for bit (tests/bundle/test_mean_path.py).

Outputs, all batch-first: `x_model` (the preprocessed input, which the service checks is
finite), `mu`, `logvar` (VAEs only), `decoded` (the decoder's mean, model space) and `outputs`
(the reconstruction in the user's units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from bundle.manifest import ModelManifest
from bundle.preprocessing import Preprocessing

X = "x"
X_MODEL = "x_model"
MU = "mu"
LOGVAR = "logvar"
DECODED = "decoded"
OUTPUTS = "outputs"


def _parameter(values: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    # One value for every feature, or one per feature in the input's layout: the broadcast
    # `Preprocessing` does in numpy.
    flat = np.asarray(values, dtype=np.float32)
    return flat.reshape(()) if flat.size == 1 else flat.reshape(shape)


def _value_info(name: str, like: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto()
    info.CopyFrom(like)
    info.name = name
    return info


def build_mean_path(
    encoder: bytes, decoder: bytes, manifest: ModelManifest, preprocessing: Preprocessing
) -> bytes:
    """The composed graph, serialised, from the two graphs' bytes (already checked against the
    manifest's hashes and names by the caller)."""
    enc = compose.add_prefix(onnx.load_from_string(encoder), "encoder/")
    dec = compose.add_prefix(onnx.load_from_string(decoder), "decoder/")
    shape = tuple(manifest.input.shape)
    specs = manifest.onnx
    encoder_input = "encoder/" + specs.encoder.inputs[0].name
    encoder_outputs = ["encoder/" + t.name for t in specs.encoder.outputs]
    decoder_input = "decoder/" + specs.decoder.inputs[0].name
    decoder_output = "decoder/" + specs.decoder.outputs[0].name
    batch_input = next(i for i in enc.graph.input if i.name == encoder_input)
    decoded_info = next(o for o in dec.graph.output if o.name == decoder_output)

    def model(
        nodes: list[onnx.NodeProto],
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        weights: list[onnx.TensorProto],
    ) -> onnx.ModelProto:
        graph = helper.make_graph(nodes, "step", inputs, outputs, weights)
        return helper.make_model(graph, opset_imports=enc.opset_import, ir_version=enc.ir_version)

    offset = _parameter(preprocessing.offset, shape)
    scale = _parameter(preprocessing.scale, shape)
    weights = [
        numpy_helper.from_array(offset, "pre/offset"),
        numpy_helper.from_array(scale, "pre/scale"),
    ]
    divided = "pre/divided" if preprocessing.clip is not None else X_MODEL
    nodes = [
        helper.make_node("Sub", [X, "pre/offset"], ["pre/centred"]),
        helper.make_node("Div", ["pre/centred", "pre/scale"], [divided]),
    ]
    if preprocessing.clip is not None:  # Max then Min: what Preprocessing.apply does
        low, high = preprocessing.clip
        weights += [
            numpy_helper.from_array(np.array(low, dtype=np.float32), "pre/low"),
            numpy_helper.from_array(np.array(high, dtype=np.float32), "pre/high"),
        ]
        nodes += [
            helper.make_node("Max", [divided, "pre/low"], ["pre/raised"]),
            helper.make_node("Min", ["pre/raised", "pre/high"], [X_MODEL]),
        ]
    pre = model(nodes, [_value_info(X, batch_input)], [_value_info(X_MODEL, batch_input)], weights)
    post = model(
        [
            helper.make_node("Mul", [DECODED, "post/scale"], ["post/scaled"]),
            helper.make_node("Add", ["post/scaled", "post/offset"], [OUTPUTS]),
        ],
        [_value_info(DECODED, decoded_info)],
        [_value_info(OUTPUTS, decoded_info)],
        [
            numpy_helper.from_array(scale, "post/scale"),
            numpy_helper.from_array(offset, "post/offset"),
        ],
    )
    encoded = compose.merge_models(
        pre, enc, io_map=[(X_MODEL, encoder_input)], outputs=[X_MODEL, *encoder_outputs]
    )
    decoded = compose.merge_models(
        encoded,
        dec,
        io_map=[(encoder_outputs[0], decoder_input)],
        outputs=[X_MODEL, *encoder_outputs, decoder_output],
    )
    whole = compose.merge_models(
        decoded,
        post,
        io_map=[(decoder_output, DECODED)],
        outputs=[X_MODEL, *encoder_outputs, decoder_output, OUTPUTS],
    )
    # The graphs' own output names, prefixed, become the names this path promises.
    renamed = dict(zip(encoder_outputs, (MU, LOGVAR), strict=False))
    renamed[decoder_output] = DECODED
    for value in [*whole.graph.output, *whole.graph.value_info]:
        value.name = renamed.get(value.name, value.name)
    for node in whole.graph.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
        node.input[:] = [renamed.get(name, name) for name in node.input]
    onnx.checker.check_model(whole)
    serialised: bytes = whole.SerializeToString()
    return serialised
