"""Call the gRPC endpoint of a running vae-service with Triton's own client and check the
answers; exit 1 on any failure.

Usage: .venv/bin/python scripts/smoke_grpc.py 127.0.0.1:8001
With SMOKE_API_KEY set, every call carries that key and a call without it must be refused
UNAUTHENTICATED; the health checks need none.
"""

from __future__ import annotations

import os
import sys

import grpc
import numpy as np
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

MODEL = "digits-vae"


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        raise SystemExit(1)


def main(target: str) -> int:
    key = os.environ.get("SMOKE_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else None
    client = triton.InferenceServerClient(target)
    check(client.is_server_live() and client.is_server_ready(), "ServerLive, ServerReady")
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # type: ignore[attr-defined]
        check(status == health_pb2.HealthCheckResponse.SERVING, "grpc.health.v1 SERVING")
    metadata = client.get_model_metadata(MODEL, headers=headers)
    check([t.name for t in metadata.outputs] == ["reconstruction", "anomaly_score"], "metadata")
    rows = np.linspace(0, 16, 3 * 64, dtype=np.float32).reshape(3, 64)
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(MODEL, [tensor], headers=headers)
    scores = result.as_numpy("anomaly_score")
    check(scores is not None and scores.shape == (3,) and bool(np.isfinite(scores).all()), "infer")
    if key:
        try:
            client.infer(MODEL, [tensor])
            check(False, "a call without the key is refused")
        except InferenceServerException as error:
            check("UNAUTHENTICATED" in str(error), "a call without the key: UNAUTHENTICATED")
    print("gRPC smoke passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
