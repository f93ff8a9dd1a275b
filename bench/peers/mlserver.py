"""Seldon's MLServer (bench/peers/mlserver_server.py) serving the bundle as a custom runtime,
with its two throughput features on: adaptive batching and parallel inference workers. Timed on
the v2 (Open Inference Protocol) REST endpoint, the one MLServer serves.

Imported by the harness in the project venv: the server itself runs in the MLServer venv
(bench/peers/requirements/mlserver.txt), so this module must not import mlserver.
"""

from __future__ import annotations

from bench.peers import Peer
from bench.peers.kserve import v2_body, v2_outputs

MLSERVER_VERSION = "1.7.1"  # bench/peers/requirements/mlserver.txt
# MLServer's docs leave both to experiment; 32 requests or 5 ms, whichever comes first
MAX_BATCH_SIZE = 32
MAX_BATCH_TIME_S = 0.005

COMMAND = (
    "{python}", "-m", "bench.peers.mlserver_server", "--port", "{port}",
    "--bundle", "{bundle}", "--model-name", "{model}",
    "--parallel-workers", "{workers}", "--max-batch-size", str(MAX_BATCH_SIZE),
    "--max-batch-time", str(MAX_BATCH_TIME_S),
)  # fmt: skip

PEERS = [
    Peer(
        key="mlserver",
        title=(
            f"MLServer {MLSERVER_VERSION}, v2 protocol, adaptive batching, "
            "{workers} inference workers"
        ),
        venv="mlserver",
        command=COMMAND,
        path="/v2/models/{model}/infer",
        body=v2_body,
        outputs=v2_outputs,
        ready_path="/v2/models/{model}/ready",
        settings={
            "version": f"mlserver {MLSERVER_VERSION} (pip, no runtime extras), numpy and "
            "onnxruntime as ours",
            "command": "python -m bench.peers.mlserver_server: writes settings.json and "
            "model-settings.json, then `mlserver start FOLDER`",
            "workers": "parallel_workers={workers}: inference worker processes (spawned) "
            "behind one HTTP process (uvicorn, uvloop), as MLServer's parallel inference runs",
            "batching": f"adaptive batching: max_batch_size={MAX_BATCH_SIZE}, "
            f"max_batch_time={MAX_BATCH_TIME_S} s (MLServer leaves both to experiment)",
            "model": "mlserver.MLModel runtime; predict decodes the input with NumpyCodec and "
            "runs VaeOnnx.reconstruct, one set of onnxruntime sessions per worker, 1 intra-op "
            "thread",
            "logging": "debug=false (MLServer's switch for the per-request access log, on by "
            "default) and loggers at WARNING via logging_settings; our choice, not MLServer advice",
            "protocol": "v2 (Open Inference Protocol) REST: POST /v2/models/{model}/infer, JSON "
            "FP32 tensor [1, features]",
            "other": "gRPC and the metrics server run, as MLServer always starts them, on free "
            "ports",
        },
    ),
]
