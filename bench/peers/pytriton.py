"""NVIDIA Triton through PyTriton (bench/peers/pytriton_server.py): Triton's own HTTP front end
and dynamic batcher, the model a `@batch` Python callable per instance, called with the KServe
v2 JSON tensor body Triton documents.

Imported by the harness in the project's venv, so it must not import pytriton: the server runs
in its own venv (requirements/pytriton.txt).
"""

from __future__ import annotations

import numpy as np
import orjson

from bench.peers import Peer, Rows

MAX_BATCH_SIZE = 64  # as ours: VAE_BATCHING_MAX_BATCH_SIZE
MAX_QUEUE_DELAY_US = 500  # as ours: VAE_BATCHING_MAX_DELAY_US


def body(rows: Rows) -> bytes:
    """One v2 inference request: input "x", FP32, shape [B, features], data flat."""
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(rows.shape),
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        }
    )


def outputs(answer: bytes) -> Rows:
    """Triton answers the output tensor flat, with its shape beside it."""
    tensor = orjson.loads(answer)["outputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


PEERS = [
    Peer(
        key="pytriton",
        title="Triton (PyTriton 0.7.0), dynamic batching, {workers} instances",
        venv="pytriton",
        command=(
            "{python}", "-m", "bench.peers.pytriton_server", "--bundle", "{bundle}",
            "--port", "{port}", "--instances", "{workers}",
            "--max-batch-size", str(MAX_BATCH_SIZE),
            "--max-queue-delay-us", str(MAX_QUEUE_DELAY_US),
        ),
        path="/v2/models/{model}/infer",
        body=body,
        outputs=outputs,
        ready_path="/v2/models/{model}/ready",
        settings={
            "versions": "nvidia-pytriton 0.7.0 (bundled tritonserver), onnxruntime 1.32.0, "
            "numpy 1.26.4 (pytriton 0.7.0 requires numpy<2)",
            "command": "python -m bench.peers.pytriton_server: Triton.bind(@batch callable) + "
            "Triton.serve(), HTTP on 127.0.0.1, gRPC and metrics on free ports",
            "instances": "{workers} model instances (infer_func=[one callable per instance]): "
            "threads of one Python process, each with its own InferenceSessions",
            "batching": f"ModelConfig(max_batch_size={MAX_BATCH_SIZE}, batcher=DynamicBatcher("
            f"max_queue_delay_microseconds={MAX_QUEUE_DELAY_US})), strict=True",
            "protocol": "KServe v2 JSON: POST /v2/models/{model}/infer, input x FP32 "
            "[1, features]",
            "logging": "TritonConfig(log_verbose=0); Python logging WARNING",
            "onnxruntime": "VaeOnnx: 1 intra-op thread per session (PEER_INTRA_OP_THREADS)",
        },
        start_timeout_s=180.0,
    ),
]  # fmt: skip
