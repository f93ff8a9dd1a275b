"""KServe's Python ModelServer (bench/peers/kserve_server.py) serving the bundle as a custom
`kserve.Model`, timed on both of its REST protocols: v1 ({"instances": ...}) and v2, the Open
Inference Protocol (JSON tensors), which KServe, MLServer and Triton all speak.

Imported by the harness in the project venv: the server itself runs in the KServe venv
(bench/peers/requirements/kserve.txt), so this module must not import kserve.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from bench.peers import Peer, Rows

KSERVE_VERSION = "0.21.0"  # bench/peers/requirements/kserve.txt


def v1_body(rows: Rows) -> bytes:
    return orjson.dumps({"instances": rows.tolist()})


def v1_outputs(answer: bytes) -> Rows:
    return np.asarray(orjson.loads(answer)["predictions"], dtype=np.float32)


def v2_body(rows: Rows) -> bytes:
    """One FP32 input tensor, [B, features], its data flat (row-major), as the Open Inference
    Protocol's JSON form lays it out; MLServer's peer sends the same body."""
    tensor = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "data": rows.reshape(-1).tolist(),
    }
    return orjson.dumps({"inputs": [tensor]})


def v2_outputs(answer: bytes) -> Rows:
    """The first output tensor, its flat data reshaped to (B, features)."""
    output: dict[str, Any] = orjson.loads(answer)["outputs"][0]
    data = np.asarray(output["data"], dtype=np.float32)
    return data.reshape(int(output["shape"][0]), -1)


COMMAND = (
    "{python}", "-m", "bench.peers.kserve_server", "--bundle", "{bundle}",
    "--model_name", "{model}", "--http_port", "{port}", "--workers", "{workers}",
    "--enable_grpc", "false", "--enable_latency_logging", "false",
)  # fmt: skip

SETTINGS = {
    "version": f"kserve {KSERVE_VERSION} (pip, no extras), numpy and onnxruntime as ours",
    "command": (
        "python -m bench.peers.kserve_server --workers {workers} --enable_grpc false "
        "--enable_latency_logging false: kserve.ModelServer().start([model]) with its own flags"
    ),
    "workers": (
        "{workers} uvicorn worker processes (--workers, spawned by KServe's "
        "RESTServerMultiProcess); the model is loaded in the parent too, which serves no HTTP"
    ),
    "model": (
        "kserve.Model subclass; predict runs VaeOnnx.reconstruct (sync, on the event loop, as "
        "KServe calls a non-async predict); each worker builds its own onnxruntime sessions, "
        "1 intra-op thread"
    ),
    "logging": (
        "--log_config_file with kserve, kserve.trace and uvicorn.access at WARNING (KServe's "
        "default logs every request twice at INFO); our choice, not KServe advice"
    ),
    "grpc": "off (--enable_grpc false): only REST is timed; KServe starts gRPC by default",
    "batching": "none: KServe's Python server has no adaptive batching",
}


PEERS = [
    Peer(
        key="kserve-v1",
        title=f"KServe ModelServer {KSERVE_VERSION}, v1 protocol, {{workers}} workers",
        venv="kserve",
        command=COMMAND,
        path="/v1/models/{model}:predict",
        body=v1_body,
        outputs=v1_outputs,
        ready_path="/v1/models/{model}",
        settings={**SETTINGS, "protocol": "v1: POST /v1/models/{model}:predict, instances"},
    ),
    Peer(
        key="kserve-v2",
        title=f"KServe ModelServer {KSERVE_VERSION}, v2 protocol, {{workers}} workers",
        venv="kserve",
        command=COMMAND,
        path="/v2/models/{model}/infer",
        body=v2_body,
        outputs=v2_outputs,
        ready_path="/v2/models/{model}/ready",
        settings={
            **SETTINGS,
            "protocol": "v2 (Open Inference Protocol) REST: POST /v2/models/{model}/infer, JSON "
            "FP32 tensor [1, features]",
        },
    ),
]
