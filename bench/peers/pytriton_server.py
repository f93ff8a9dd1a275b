# mypy: ignore-errors
# (pytriton lives only in the peer's venv, bench/out/venvs/pytriton: the project's mypy cannot
# resolve it, and its decorators are untyped, so every function here would need an ignore.)
"""NVIDIA Triton through PyTriton, serving `VaeOnnx.reconstruct` the way PyTriton's docs deploy a
Python model: a `@batch` inference callable bound with `Triton.bind`, Triton's dynamic batcher in
front of it, one callable per model instance, and `Triton.serve()` blocking until stopped.

    python -m bench.peers.pytriton_server --bundle DIR --port 8000 [--instances 2]

Run by the pytriton peer venv's python with the repository root as cwd (bench/peers/pytriton.py
says how); the HTTP port is the harness's, the gRPC port too when --grpc-port names one
(bench/grpc_bench.py speaks gRPC to it), the metrics port a free one picked here (Triton opens
all three).

Triton runs each instance's requests on its own thread of this process (PyTriton's proxy hands
them over ZMQ), so two instances are two threads, each with its own onnxruntime sessions: they
overlap where onnxruntime releases the GIL, which is where the time goes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import (
    DEFAULT_PROTECTED_ENDPOINTS,
    Triton,
    TritonConfig,
    TritonSecurityConfig,
)

from bench.peers.vae_onnx import VaeOnnx

INPUT, OUTPUT = "x", "y"


def free_port() -> int:
    """A port nothing listens on now: Triton insists on gRPC and metrics ports of its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def embed_this_python() -> None:
    """Make Triton's Python backend stub embed this interpreter's libpython.

    The stub (bundled, one per Python minor version) links `libpython3.11.so.1.0` and runs the
    inference proxy with this interpreter's standard library. Found through the default search
    path it is the system's libpython (Debian 12: 3.11.2) under pyenv's 3.11.7 stdlib, and the
    proxy dies in `multiprocessing.resource_tracker` ("'_thread.RLock' object has no attribute
    '_recursion_count'"). PyTriton's installation guide does this for interpreters outside the
    system's (uv): `sysconfig.get_config_var("LIBDIR")` on LD_LIBRARY_PATH, which Triton passes
    on to its stubs and which is searched before the system's library folders.
    """
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return  # a static interpreter: the stub can only use the system's libpython
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    paths = [libdir, *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":"))]
    os.environ["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))


def instance(model: VaeOnnx) -> Callable[..., dict[str, np.ndarray]]:
    """One model instance's inference callable, over sessions of its own (two instances never
    share an onnxruntime session across threads). `@batch` hands it the dynamic batch stacked
    as one (B, features) array and splits the answer back per request."""

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {OUTPUT: model.reconstruct(inputs[INPUT])}

    return infer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.pytriton_server")
    parser.add_argument("--bundle", type=Path, required=True, help="model.json + ONNX graphs")
    parser.add_argument("--port", type=int, required=True, help="Triton's HTTP port")
    parser.add_argument(
        "--grpc-port", type=int, default=0, help="Triton's gRPC port (0: a free one)"
    )
    parser.add_argument("--instances", type=int, default=2, help="model instances (threads)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    options = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # The harness stops servers with SIGTERM; `Triton.serve()` shuts down cleanly (Triton
    # binary, proxy backends, workspace) on KeyboardInterrupt, which SIGINT raises.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    embed_this_python()

    models = [VaeOnnx(options.bundle) for _ in range(options.instances)]
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=options.port,
        grpc_address="127.0.0.1",
        grpc_port=options.grpc_port or free_port(),
        metrics_port=free_port(),
        log_verbose=0,
    )
    # PyTriton guards Triton's statistics (and more) with a random access token; plain Triton
    # leaves them open, and Triton's own benchmark client (perf_analyzer, bench/grpc_bench.py)
    # reads them after every measurement window. The model endpoints are never guarded.
    security = TritonSecurityConfig(
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    )
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=models[0].name,
            infer_func=[instance(model) for model in models],
            inputs=[Tensor(name=INPUT, dtype=np.float32, shape=(models[0].features,))],
            outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(models[0].features,))],
            config=ModelConfig(
                max_batch_size=options.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
