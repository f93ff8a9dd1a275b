# mypy: ignore-errors
"""The MLServer peer: a custom inference runtime (`mlserver.MLModel`) whose predict runs
`VaeOnnx.reconstruct`, with adaptive batching and a pool of parallel inference workers.

    {python} -m bench.peers.mlserver_server --port PORT --bundle BUNDLE --model-name NAME \
        --parallel-workers 2 --max-batch-size 32 --max-batch-time 0.005

MLServer is configured by files, not flags: this writes `settings.json` (server) and
`model-settings.json` (the model) into a temporary folder from its arguments and runs
`mlserver start FOLDER` in-process (the `mlserver` console script's own entry point), so the
folder is removed when the server stops.

Runs only in the MLServer peer venv (bench/peers/requirements/mlserver.txt).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from bench.peers.vae_onnx import VaeOnnx

RUNTIME = "bench.peers.mlserver_server.VaeRuntime"


class VaeRuntime(MLModel):
    """The bundle's reconstruction as an MLServer runtime, loaded once per inference worker.

    With adaptive batching on, MLServer concatenates queued requests along the first axis
    before `predict` and splits the answer back per request, so `predict` sees (N, features).
    """

    async def load(self) -> bool:
        self._vae = VaeOnnx(await get_model_uri(self.settings))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self._vae.reconstruct(rows)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("reconstruction", outputs)],
        )


def free_port() -> int:
    """MLServer always starts gRPC (8081) and a metrics server (8082) beside HTTP; free ports
    keep two peers, or a leftover server, from colliding on them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_settings(folder: Path, options: argparse.Namespace) -> None:
    """settings.json and model-settings.json, from the command line."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": options.port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        # the pool of inference worker processes the HTTP process hands batches to
        "parallel_workers": options.parallel_workers,
        # debug (on by default) logs every request (uvicorn's access log) and logs at DEBUG;
        # off, MLServer logs at INFO, raised to WARNING here as for every peer
        "debug": False,
        "logging_settings": {
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {
                name: {"level": "WARNING"}
                for name in ("mlserver", "uvicorn", "uvicorn.error", "uvicorn.access")
            },
        },
        # both default to folders in the working directory (the repository root)
        "metrics_dir": str(folder / "metrics"),
        "environments_dir": str(folder / "envs"),
    }
    model_settings: dict[str, Any] = {
        "name": options.model_name,
        "implementation": RUNTIME,
        "max_batch_size": options.max_batch_size,
        "max_batch_time": options.max_batch_time,
        "parameters": {"uri": str(Path(options.bundle).resolve())},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    model_folder = folder / "models" / options.model_name
    model_folder.mkdir(parents=True)
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.mlserver_server")
    parser.add_argument("--port", type=int, required=True, help="HTTP port")
    parser.add_argument("--bundle", required=True, help="bundle folder (model.json, *.onnx)")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--parallel-workers", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-time", type=float, default=0.005, help="seconds")
    options = parser.parse_args(argv)

    from mlserver.cli import main as mlserver_main

    with tempfile.TemporaryDirectory(prefix="mlserver-peer-") as folder:
        write_settings(Path(folder), options)
        sys.argv = ["mlserver", "start", folder]
        try:
            mlserver_main()
        except SystemExit as done:  # click ends every command with sys.exit
            if done.code not in (None, 0):
                raise


if __name__ == "__main__":
    main()
