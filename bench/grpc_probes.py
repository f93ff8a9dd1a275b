"""Two small gRPC measurements behind figures in docs/performance.md and service/grpc/.

.venv/bin/python -m bench.grpc_probes ceiling --port 18201 [--server native|grpcio]
    a gRPC server (our native transport, or grpcio's asyncio server, on uvloop as a worker
    runs them) whose ModelInfer returns a canned answer: what the transport alone costs a
    call. Drive it with perf_analyzer:
    perf_analyzer -m m -u 127.0.0.1:18201 -i grpc --concurrency-range 8 -b 1
.venv/bin/python -m bench.grpc_probes stream --target 127.0.0.1:8001 --requests 3000
    one tritonclient stream sending single items without waiting, timed until every
    answer is back (how STREAM_WINDOW was weighed, service/grpc/servicer.py)
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import uvloop

from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as pb_grpc
from service.grpc.native.server import NativeServer
from service.grpc.observe import Context

FEATURES = 64


class CannedServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Just enough of the service for perf_analyzer: a model `m` taking x (64 floats) whose
    answer is its input, sent back as raw bytes."""

    async def ModelConfig(  # noqa: N802 (the protocol's name)
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        fp32 = pb.DataType.TYPE_FP32
        config = pb.ModelConfig(
            name="m",
            max_batch_size=64,
            input=[pb.ModelInput(name="x", data_type=fp32, dims=[FEATURES])],
            output=[pb.ModelOutput(name="y", data_type=fp32, dims=[FEATURES])],
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name="m",
            versions=["1"],
            platform="canned",
            inputs=[tensor(name="x", datatype="FP32", shape=[-1, FEATURES])],
            outputs=[tensor(name="y", datatype="FP32", shape=[-1, FEATURES])],
        )

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="canned", version="1")

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        answer = pb.ModelInferResponse(model_name="m", model_version="1")
        shape = list(request.inputs[0].shape) if request.inputs else [1, FEATURES]
        answer.outputs.add(name="y", datatype="FP32", shape=shape)
        answer.raw_output_contents.extend(request.raw_input_contents[:1])
        return answer


async def serve_canned(port: int, transport: str) -> None:
    # The methods perf_analyzer does not call stay the generated "unimplemented".
    servicer = CannedServicer()  # type: ignore[abstract]
    if transport == "native":
        native = NativeServer([], max_message=1 << 26, max_calls=1024, max_connections=512,
                              message_wait_s=60.0)  # fmt: skip
        host: Any = native  # what add_*_to_server calls, it offers (its docstring)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, host)
        await native.start("127.0.0.1", port)
        print(f"canned gRPC server (native) on 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"canned gRPC server (grpcio) on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def time_stream(target: str, requests: int) -> float:
    """Requests a second of one stream carrying `requests` single items sent back to back."""
    import tritonclient.grpc as triton
    from sklearn.datasets import load_digits

    rows = load_digits().data.astype(np.float32)
    client = triton.InferenceServerClient(target)
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error))
    inputs = []
    for index in range(requests):
        tensor = triton.InferInput("x", [1, FEATURES], "FP32")
        tensor.set_data_from_numpy(rows[index % len(rows)][None])
        inputs.append(tensor)
    began = time.perf_counter()
    for tensor in inputs:
        client.async_stream_infer("digits-vae", [tensor])
    errors = sum(answers.get(timeout=120) is not None for _ in range(requests))
    seconds = time.perf_counter() - began
    client.stop_stream()
    if errors:
        raise RuntimeError(f"{errors} of {requests} stream requests failed")
    return requests / seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_probes", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ceiling = commands.add_parser("ceiling", help="serve canned answers")
    ceiling.add_argument("--port", type=int, default=18201)
    ceiling.add_argument("--server", choices=("native", "grpcio"), default="native")
    stream = commands.add_parser("stream", help="time one stream")
    stream.add_argument("--target", default="127.0.0.1:8001")
    stream.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.command == "ceiling":
        uvloop.run(serve_canned(args.port, args.server))
    else:
        rate = time_stream(args.target, args.requests)
        print(f"{args.requests} requests on one stream: {rate:,.0f} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
