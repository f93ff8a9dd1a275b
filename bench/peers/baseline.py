"""The plain FastAPI + pydantic service (bench/baseline_app.py), with as many workers as ours."""

from __future__ import annotations

import numpy as np
import orjson

from bench.peers import Peer, Rows


def body(rows: Rows) -> bytes:
    return orjson.dumps({"inputs": rows.tolist()})


def outputs(answer: bytes) -> Rows:
    return np.asarray(orjson.loads(answer)["outputs"], dtype=np.float32)


PEERS = [
    Peer(
        key="fastapi",
        title="plain FastAPI + pydantic, {workers} workers",
        venv="",
        command=(
            "{python}", "-m", "uvicorn", "bench.baseline_app:app", "--host", "127.0.0.1",
            "--port", "{port}", "--workers", "{workers}", "--log-level", "warning",
        ),
        env={"BASELINE_MODEL_DIR": "{bundle}"},
        path="/reconstruct",
        body=body,
        outputs=outputs,
        ready_path="/openapi.json",
        settings={
            "command": "uvicorn bench.baseline_app:app --workers {workers} (uvloop, httptools)",
            "onnxruntime": "one InferenceSession per graph, default SessionOptions",
        },
    ),
]  # fmt: skip
