"""BentoML (bench/peers/bentoml_service.py): `bentoml serve` on a `@bentoml.service` with one
batchable numpy API (adaptive batching), as many worker processes as ours, called with the JSON
body BentoML's docs show for an `np.ndarray` parameter: {"inputs": [[...]]}.

Imported by the harness in the project's venv, so it must not import bentoml (nor can it: as
`bench.peers.bentoml` it is not the package, which lives only in the peer venv).
"""

from __future__ import annotations

import numpy as np
import orjson

from bench.peers import Peer, Rows, inputs_body

MAX_BATCH_SIZE = 64  # as ours: VAE_BATCHING_MAX_BATCH_SIZE
# 1000 ms as in BentoML's adaptive batching guide (the default is 60000). The guide calls it the
# longest a batch waits; the dispatcher treats it as a budget: it picks its own window from the
# latencies it measures, and answers 503 to what it could not serve within this.
MAX_LATENCY_MS = 1000


def outputs(answer: bytes) -> Rows:
    """The returned np.ndarray comes back as a bare JSON array, (B, features)."""
    return np.asarray(orjson.loads(answer), dtype=np.float32)


PEERS = [
    Peer(
        key="bentoml",
        title="BentoML 1.4.40, adaptive batching, {workers} workers",
        venv="bentoml",
        command=(
            "{python}", "-m", "bentoml", "serve", "bench.peers.bentoml_service:VaeService",
            "--host", "127.0.0.1", "--port", "{port}", "--quiet",
            "--arg", "bundle={bundle}", "--arg", "workers={workers}",
            "--arg", f"max_batch_size={MAX_BATCH_SIZE}",
            "--arg", f"max_latency_ms={MAX_LATENCY_MS}",
        ),
        env={"BENTOML_DO_NOT_TRACK": "True"},
        path="/reconstruct",
        body=inputs_body,
        outputs=outputs,
        ready_path="/readyz",
        settings={
            "versions": "bentoml 1.4.40, numpy 2.4.6, onnxruntime 1.32.0",
            "command": "bentoml serve bench.peers.bentoml_service:VaeService (production mode, "
            "the default) --quiet",
            "workers": "@bentoml.service(workers={workers}): one process and one VaeOnnx each",
            "batching": f"@bentoml.api(batchable=True, batch_dim=0, max_batch_size="
            f"{MAX_BATCH_SIZE}, max_latency_ms={MAX_LATENCY_MS})",
            "logging": "--quiet, access log off (logging={'access': {'enabled': False}}), "
            "BENTOML_DO_NOT_TRACK=True",
            "onnxruntime": "VaeOnnx: 1 intra-op thread per session (PEER_INTRA_OP_THREADS)",
        },
    ),
]  # fmt: skip
