# mypy: ignore-errors
# (ray lives only in the peer's venv, bench/out/venvs/rayserve: the project's mypy cannot
# resolve it, and its decorators are untyped, so every definition here would need an ignore.)
"""Ray Serve serving `VaeOnnx.reconstruct` the way Ray Serve's docs deploy a model: a
`@serve.deployment` class with `num_replicas` replicas, its `__call__` taking the Starlette
request, `@serve.batch` gathering concurrent calls into one model run, on a local Ray instance
this script starts and stops.

    python -m bench.peers.rayserve_server --bundle DIR --port 8000 [--replicas 2]

Run by the rayserve peer venv's python with the repository root as cwd (bench/peers/rayserve.py
says how). POST / with {"inputs": [[...]]} answers {"outputs": [[...]]}; GET / answers 200 once
a replica has loaded the model (the proxy has no route before), which the harness polls.

Ray runs its own daemons (GCS, raylet, workers, the Serve controller and HTTP proxy), some in
sessions of their own: the process group the harness kills on timeout may miss them, so SIGTERM
shuts Serve and Ray down here before exiting.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

from bench.peers.vae_onnx import VaeOnnx

ROOT = Path(__file__).resolve().parents[2]


@serve.deployment
class Reconstruct:
    """One replica: one Ray actor process with its own onnxruntime sessions."""

    def __init__(self, bundle: str, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.model = VaeOnnx(bundle)
        self.name = self.model.name
        # @serve.batch's settings, per replica, from the deployment's arguments
        self.run_batch.set_max_batch_size(max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def run_batch(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        """Concurrent calls' (n, features) arrays as one model run, split back per call."""
        sizes = np.cumsum([len(rows) for rows in requests])[:-1]
        outputs = self.model.reconstruct(np.concatenate(requests))
        return np.split(outputs, sizes)

    async def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return {"model": self.name, "ready": True}
        payload = await request.json()
        rows = np.asarray(payload["inputs"], dtype=np.float32).reshape(-1, self.model.features)
        outputs = await self.run_batch(rows)
        return {"outputs": outputs.tolist()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.rayserve_server")
    parser.add_argument("--bundle", type=Path, required=True, help="model.json + ONNX graphs")
    parser.add_argument("--port", type=int, required=True, help="Serve's HTTP port")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2, help="the local Ray's CPUs")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.0005)
    options = parser.parse_args(argv)

    # Replicas are Ray worker processes started by the raylet: they import this module and
    # bench.peers.vae_onnx from the repository root, inherited through PYTHONPATH.
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    os.environ["PYTHONPATH"] = ":".join(dict.fromkeys(paths))

    ray.init(
        address="local",  # a fresh local instance, never one another benchmark started
        num_cpus=options.num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    stop = threading.Event()
    # after ray.init, which installs a SIGTERM handler of its own for the driver
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": "127.0.0.1", "port": options.port}, logging_config=quiet)
        application = Reconstruct.options(
            num_replicas=options.replicas,
            # one CPU per replica: with num_cpus=2 both fit, as ours runs one worker per core
            ray_actor_options={"num_cpus": 1},
            # the batching guide: a replica must accept at least a batch's worth of requests
            max_ongoing_requests=options.max_batch_size,
        ).bind(str(options.bundle), options.max_batch_size, options.batch_wait_timeout_s)
        serve.run(application, route_prefix="/", logging_config=quiet)
        while not stop.wait(1.0):
            pass  # a timed wait, so the signal handlers run promptly
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
