"""bench.grpc_probes' canned server answers what perf_analyzer asks, with the input back."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from bench.grpc_probes import CannedServicer
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as pb_grpc
from tests.e2e.processes import free_port


def test_the_canned_server_answers_config_and_echoes_its_input() -> None:
    async def exchange() -> tuple[pb.ModelConfigResponse, pb.ModelInferResponse]:
        server = grpc.aio.server()
        servicer = CannedServicer()  # type: ignore[abstract]
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                config = await stub.ModelConfig(pb.ModelConfigRequest(name="m"))
                request = pb.ModelInferRequest(model_name="m")
                request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
                request.raw_input_contents.append(np.arange(64, dtype="<f4").tobytes())
                answer = await stub.ModelInfer(request)
        finally:
            await server.stop(0)
        return config, answer

    config, answer = asyncio.run(exchange())
    assert config.config.max_batch_size == 64
    assert list(config.config.input[0].dims) == [64]
    assert list(answer.outputs[0].shape) == [1, 64]
    np.testing.assert_array_equal(
        np.frombuffer(answer.raw_output_contents[0], "<f4"), np.arange(64, dtype=np.float32)
    )


def test_the_canned_servicer_on_the_native_transport() -> None:
    """The same servicer hosted by service.grpc.native's server (as `grpc_probes ceiling
    --server native` hosts it): its answers as grpcio's, and a method it leaves to the
    generated base (which sets UNIMPLEMENTED, then raises) answered UNIMPLEMENTED, not as
    an unexpected error."""
    from typing import Any

    from service.grpc.native.server import NativeServer

    async def exchange() -> tuple[pb.ModelInferResponse, Any]:
        native = NativeServer(
            [], max_message=1 << 20, max_calls=8, max_connections=8, message_wait_s=5.0
        )
        host: Any = native
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(CannedServicer(), host)  # type: ignore[abstract]
        port = await native.start("127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                request = pb.ModelInferRequest(model_name="m")
                request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
                request.raw_input_contents.append(np.arange(64, dtype="<f4").tobytes())
                answer = await stub.ModelInfer(request)
                try:
                    await stub.ServerLive(pb.ServerLiveRequest())
                    refused = None
                except grpc.aio.AioRpcError as error:
                    refused = error
        finally:
            await native.stop(0)
        return answer, refused

    answer, refused = asyncio.run(exchange())
    np.testing.assert_array_equal(
        np.frombuffer(answer.raw_output_contents[0], "<f4"), np.arange(64, dtype=np.float32)
    )
    assert refused is not None
    assert refused.code() == grpc.StatusCode.UNIMPLEMENTED
    assert refused.details() == "Method not implemented!"
