"""The plain FastAPI + pydantic service (bench/baseline_app.py), with as many workers as ours."""

from __future__ import annotations

from bench.peers import Peer, inputs_body, outputs_field

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
        body=inputs_body,
        outputs=outputs_field,
        ready_path="/openapi.json",
        settings={
            "command": "uvicorn bench.baseline_app:app --workers {workers} (uvloop, httptools)",
            "onnxruntime": "one InferenceSession per graph, default SessionOptions",
        },
    ),
]  # fmt: skip
