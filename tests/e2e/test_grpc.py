"""The Open Inference Protocol over gRPC, on a real `vae-serve` (two workers sharing the gRPC
port), called with Triton's own client (`tritonclient.grpc`), grpcio's health and reflection
clients, and the stubs generated from our .proto where a raw message is the point."""

from __future__ import annotations

import queue
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

from bench.placement import children
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as pb_grpc
from tests.bundles import committed_repository
from tests.e2e.processes import free_port, serve, terminate, wait_ready
from tests.e2e.test_reload import publish_version

DIGITS = load_digits().data.astype(np.float32)
MODEL = "digits-vae"
KEY = "grpc-test-key-0123456789"


class Server:
    def __init__(self, process: subprocess.Popen[str], base: str, grpc_port: int) -> None:
        self.process = process
        self.base = base
        self.target = f"127.0.0.1:{grpc_port}"

    def client(self, **kwargs: Any) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.target, **kwargs)


# Which transport carries gRPC in this module's servers (VAE_GRPC_SERVER): every test runs on
# both, grpcio's server and ours (service/grpc/native/), which must answer alike.
TRANSPORT = {"name": "grpcio"}


@pytest.fixture(scope="module", params=["grpcio", "native"], autouse=True)
def transport(request: pytest.FixtureRequest) -> str:
    TRANSPORT["name"] = request.param
    return str(request.param)


def start(env: dict[str, str], repository: Path | None = None) -> Server:
    port, grpc_port = free_port(), free_port()
    process = serve(
        "--model-repository",
        str(repository or committed_repository()),
        "--port",
        str(port),
        env={
            "VAE_GRPC_PORT": str(grpc_port),
            "VAE_LOG_LEVEL": "warning",
            "VAE_GRPC_SERVER": TRANSPORT["name"],
            **env,
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, process)
    return Server(process, base, grpc_port)


def stop(server: Server) -> None:
    terminate(server.process)


@pytest.fixture(scope="module")
def server(transport: str) -> Iterator[Server]:
    running = start({"VAE_WORKERS": "2"})
    yield running
    stop(running)


def infer_input(name: str, array: np.ndarray[Any, Any], datatype: str = "FP32") -> Any:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def rest_infer(server: Server, model: str, name: str, array: np.ndarray[Any, Any]) -> Any:
    body = {
        "inputs": [
            {
                "name": name,
                "datatype": "FP32",
                "shape": list(array.shape),
                "data": array.ravel().tolist(),
            }
        ]
    }
    answer = httpx.post(f"{server.base}/v2/models/{model}/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


# --------------------------------------------------------------------------- the protocol


def test_health_and_metadata(server: Server) -> None:
    client = server.client()
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(f"{MODEL}-encoder", "1")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_server_metadata()
    assert metadata.name == "vae-service"
    model = client.get_model_metadata(MODEL)
    assert model.versions == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 64])]
    assert [t.name for t in model.outputs] == ["reconstruction", "anomaly_score"]
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("no-such-model")


@pytest.mark.parametrize(
    ("model", "name", "outputs"),
    [
        (MODEL, "x", ("reconstruction", "anomaly_score")),
        (f"{MODEL}-encoder", "x", ("mu", "logvar")),
        (f"{MODEL}-decoder", "z", ("x_hat",)),
    ],
)
def test_each_model_answers_as_rest_does_bit_for_bit(
    server: Server, model: str, name: str, outputs: tuple[str, ...]
) -> None:
    rows = DIGITS[:7] if name == "x" else np.random.default_rng(0).normal(size=(7, 8))
    rows = rows.astype(np.float32)
    result = server.client().infer(model, [infer_input(name, rows)])
    rest = rest_infer(server, model, name, rows)
    for output in outputs:
        ours = result.as_numpy(output)
        assert ours is not None
        assert ours.shape == rest[output].shape
        # REST writes each float32's shortest repr, which reads back to the same float32
        np.testing.assert_array_equal(ours, rest[output].astype(ours.dtype))
    assert result.get_response().model_version == "1"


def test_typed_contents_and_a_score_type(server: Server) -> None:
    """Values in `contents` (not raw bytes) come back in `contents`, and parameters work."""
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name=MODEL, id="typed-1")
        tensor = request.inputs.add(name="x", datatype="FP64", shape=[2, 64])
        tensor.contents.fp64_contents.extend(DIGITS[:2].astype(np.float64).ravel().tolist())
        request.outputs.add(name="anomaly_score")
        request.parameters["score_type"].string_param = "recon_mse"
        response, call = stub.ModelInfer.with_call(request)
    assert response.id == "typed-1"
    assert [o.name for o in response.outputs] == ["anomaly_score"]
    assert not response.raw_output_contents
    scores = np.asarray(response.outputs[0].contents.fp64_contents)
    rest = httpx.post(
        f"{server.base}/models/{MODEL}/anomaly-score",
        json={"inputs": DIGITS[:2].tolist(), "score_type": "recon_mse"},
        timeout=10,
    ).json()
    np.testing.assert_allclose(scores, rest["scores"], rtol=1e-12)
    trailers = dict(call.trailing_metadata() or ())
    assert len(trailers["x-request-id"]) == 32


# --------------------------------------------------------------------------- errors


def raw_call(server: Server, request: pb.ModelInferRequest) -> Any:
    """The error a refused call raises: a grpc.RpcError that is also a grpc.Call (code(),
    details(), trailing_metadata())."""
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
    return caught.value


def test_bad_requests_are_invalid_argument_naming_the_field(server: Server) -> None:
    huge = pb.ModelInferRequest(model_name=MODEL)
    huge.inputs.add(name="x", datatype="FP32", shape=[2**40, 2**22])
    huge.raw_input_contents.append(b"\0" * 16)
    lying = pb.ModelInferRequest(model_name=MODEL)
    lying.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    lying.raw_input_contents.append(b"\0" * 255)
    wrong_type = pb.ModelInferRequest(model_name=MODEL)
    wrong_type.inputs.add(name="x", datatype="BYTES", shape=[1, 64])
    many = pb.ModelInferRequest(model_name=MODEL)
    for index in range(10_000):
        many.inputs.add(name=f"x{index}", datatype="FP32", shape=[1])
        many.raw_input_contents.append(b"\0\0\0\0")
    nan = pb.ModelInferRequest(model_name=MODEL)
    nan.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    nan.raw_input_contents.append(np.full(64, np.nan, np.float32).tobytes())
    cases = {
        "shape": huge,
        "raw_input_contents holds 255 bytes": lying,
        "BYTES tensors": wrong_type,
        "exactly one input": many,
        "non-finite": nan,
    }
    for expected, request in cases.items():
        error = raw_call(server, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (expected, error.details())
        assert expected in (error.details() or ""), (expected, error.details())
    # the worker survived every one of them
    assert server.client().is_server_ready()


def test_unknown_model_is_not_found_and_a_huge_message_is_refused(server: Server) -> None:
    unknown = pb.ModelInferRequest(model_name="nope")
    unknown.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    assert raw_call(server, unknown).code() == grpc.StatusCode.NOT_FOUND
    # Above the model's own limit (4096 items of 64 inputs as JSON, ~8.7 MB), under the
    # server's message limit (VAE_MAX_BODY_BYTES, 64 MiB): refused by the data plane.
    big = pb.ModelInferRequest(model_name=MODEL)
    big.inputs.add(name="x", datatype="FP32", shape=[40_000, 64])
    big.raw_input_contents.append(b"\0" * (40_000 * 64 * 4))
    error = raw_call(server, big)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "above the limit" in (error.details() or "")
    # Above the server's message limit: grpcio refuses it before anything is parsed.
    bigger = pb.ModelInferRequest(model_name=MODEL)
    bigger.raw_input_contents.append(b"\0" * (65 * 1024 * 1024))
    assert raw_call(server, bigger).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.client().is_server_ready()


# --------------------------------------------------------------------------- streaming


def test_a_stream_of_1000_requests_in_one_call(server: Server) -> None:
    client = server.client()
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index in range(1000):
            row = DIGITS[index % len(DIGITS)][None]
            client.async_stream_infer(MODEL, [infer_input("x", row)], request_id=f"s{index}")
        # one bad request in the middle is answered as an error; the stream goes on
        client.async_stream_infer(
            MODEL, [infer_input("x", np.zeros((1, 5), np.float32))], request_id="bad"
        )
        client.async_stream_infer(MODEL, [infer_input("x", DIGITS[:1])], request_id="after")
        received = [answers.get(timeout=60) for _ in range(1002)]
    finally:
        client.stop_stream()
    results = received
    ids = [result.get_response().id for result, error in results if error is None]
    assert ids == [f"s{i}" for i in range(1000)] + ["after"]  # in the order sent
    errors = [error for _, error in results if error is not None]
    assert len(errors) == 1
    assert "expected shape" in str(errors[0])
    first = results[0][0].as_numpy("anomaly_score")
    alone = client.infer(MODEL, [infer_input("x", DIGITS[:1])]).as_numpy("anomaly_score")
    np.testing.assert_array_equal(first, alone)


def _abandoned_streams(server: Server, body: Path, runs: int) -> None:
    """Streams of 200 requests on 8 connections, one after another for 1 s, through h2load
    (nghttp2's load generator, `make test` installs it): when its time is up it closes its
    connections with streams whose answers are still being made."""
    h2load = shutil.which("h2load")
    assert h2load is not None, "h2load is missing: scripts/bench-tools.sh installs it"
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(DIGITS[:1].tobytes())
    message = request.SerializeToString()
    body.write_bytes((b"\x00" + struct.pack(">I", len(message)) + message) * 200)
    url = f"http://{server.target}/inference.GRPCInferenceService/ModelStreamInfer"
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    for _ in range(runs):
        done = subprocess.run(
            [h2load, "-D", "1", "-c", "8", "-m", "1", "-t", "1", "-d", str(body), *headers, url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert " succeeded, 0 failed" in done.stdout, done.stdout
        time.sleep(1.0)


def test_a_stream_its_client_leaves_mid_way_loses_no_worker(tmp_path: Path) -> None:
    """A client that leaves a stream while its answers are being made: the stream's tasks end
    without touching the finished call (on grpcio's server, asking its context for the peer
    then crashed the worker: 6 workers lost in three such 1 s runs), and the
    workers that served them go on serving."""
    # Two workers under a supervisor, which replaces one that dies; access lines on (the
    # default level), since writing one asked the context for the peer.
    server = start({"VAE_WORKERS": "2", "VAE_LOG_LEVEL": "info"})
    assert server.process.stdout is not None
    drain = threading.Thread(target=server.process.stdout.read, daemon=True)
    drain.start()  # a line for every request: the pipe must not fill
    try:
        workers = children(server.process.pid)
        assert workers
        _abandoned_streams(server, tmp_path / "streams.bin", runs=3)
        time.sleep(2.0)  # the abandoned streams' work winds down
        alone = server.client().infer(MODEL, [infer_input("x", DIGITS[:1])])
        assert alone.as_numpy("anomaly_score").shape == (1,)
        assert children(server.process.pid) == workers  # no worker died and was replaced
    finally:
        stop(server)


def test_an_idle_stream_is_ended() -> None:
    running = start({"VAE_WORKERS": "1", "VAE_GRPC_STREAM_IDLE_TIMEOUT_S": "0.5"})
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            never = threading.Event()

            def silent() -> Iterator[pb.ModelInferRequest]:
                never.wait(5)  # a stream that sends nothing
                yield from ()

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.ModelStreamInfer(silent(), timeout=10))
            never.set()
            error: Any = caught.value
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "VAE_GRPC_STREAM_IDLE_TIMEOUT_S" in (error.details() or "")
            assert time.monotonic() - started < 4
    finally:
        stop(running)


def test_sigterm_mid_stream_drains_the_stream() -> None:
    running = start({"VAE_WORKERS": "1", "VAE_SHUTDOWN_DRAIN_S": "20"})
    try:
        client = running.client()
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for index in range(5):
            client.async_stream_infer(MODEL, [infer_input("x", DIGITS[:1])], request_id=f"a{index}")
        first = [answers.get(timeout=10) for _ in range(5)]
        running.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the server is shutting down; the stream is still open
        for index in range(5):
            client.async_stream_infer(MODEL, [infer_input("x", DIGITS[:1])], request_id=f"b{index}")
        second = [answers.get(timeout=10) for _ in range(5)]
        client.stop_stream()
        assert all(error is None for _, error in first + second), first + second
        assert [r.get_response().id for r, _ in second] == [f"b{i}" for i in range(5)]
        assert running.process.wait(timeout=30) == 0
        # once drained, nothing new is taken
        with pytest.raises(InferenceServerException):
            running.client().is_server_live()
    finally:
        stop(running)


# --------------------------------------------------------------------------- around it


def test_health_service_and_reflection(server: Server) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        for name in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # What grpcurl does: learn the services and their messages from the server alone.
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "inference.GRPCInferenceService" in services
        assert "grpc.health.v1.Health" in services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        assert "ModelStreamInfer" in [m.name for m in service.methods]
        request = pool.FindMessageTypeByName("inference.ModelInferRequest")
        assert request.fields_by_name["raw_input_contents"].number == 7


def test_api_keys_and_metrics() -> None:
    running = start({"VAE_WORKERS": "1", "VAE_API_KEYS": KEY})
    try:
        rows = DIGITS[:2]
        bare = running.client()
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            bare.infer(MODEL, [infer_input("x", rows)])
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
            bare.infer(MODEL, [infer_input("x", rows)], headers={"x-api-key": "wrong"})
        answer = bare.infer(
            MODEL, [infer_input("x", rows)], headers={"authorization": f"Bearer {KEY}"}
        )
        assert answer.as_numpy("anomaly_score").shape == (2,)
        # health stays open for probes that carry no key, as /v2/health/* and /readyz do
        assert bare.is_server_live()
        assert bare.is_server_ready()
        with grpc.insecure_channel(running.target) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            check = health.Check
            assert check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            bare.get_model_metadata(MODEL)
        scraped = httpx.get(f"{running.base}/metrics", headers={"x-api-key": KEY}, timeout=10).text
        route = "/inference.GRPCInferenceService/ModelInfer"
        for status, count in (("200", 1), ("401", 1), ("403", 1)):
            line = (
                f'vae_requests_total{{model="{MODEL if status == "200" else "-"}",'
                f'protocol="grpc",route="{route}",status="{status}"}} {count:.1f}'
            )
            assert line in scraped, (line, [s for s in scraped.splitlines() if "grpc" in s])
    finally:
        stop(running)


def test_overload_is_resource_exhausted_with_a_retry_hint() -> None:
    running = start({"VAE_WORKERS": "1", "VAE_MAX_CONCURRENCY": "1", "VAE_MAX_QUEUE": "0"})
    try:
        rows = np.tile(DIGITS, (3, 1))[:4096]  # large enough to run in the executor
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="x", datatype="FP32", shape=list(rows.shape))
        request.raw_input_contents.append(rows.tobytes())
        codes: list[grpc.StatusCode] = []
        trailers: list[dict[str, Any]] = []
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            futures = [stub.ModelInfer.future(request, timeout=30) for _ in range(24)]
            for future in futures:
                try:
                    future.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as raised:
                    error: Any = raised  # also a grpc.Call
                    codes.append(error.code())
                    trailers.append(dict(error.trailing_metadata() or ()))
        assert grpc.StatusCode.OK in codes
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(t.get("grpc-retry-pushback-ms") == "1000" for t in trailers)
    finally:
        stop(running)


def test_hot_reload_reaches_grpc(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(committed_repository() / MODEL / "1", repository / MODEL / "1")
    running = start({"VAE_WORKERS": "2"}, repository)
    try:
        client = running.client()
        assert client.get_model_metadata(MODEL).versions == ["1"]
        publish_version(repository, "2")
        # Until every other worker reports it reloaded (a worker still starting loads the
        # repository as it is anyway): then any connection, whichever worker it reaches,
        # sees version 2.
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.post(f"{running.base}/admin/reload", timeout=60)
            assert answer.status_code == 200, answer.text
            if not answer.json()["others"]["pending"]:
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.5)
        for _ in range(4):
            fresh = running.client()
            assert fresh.get_model_metadata(MODEL).versions == ["1", "2"]
            assert fresh.is_model_ready(MODEL, "2")
            result = fresh.infer(MODEL, [infer_input("x", DIGITS[:1])])
            assert result.get_response().model_version == "2"
            fresh.close()
    finally:
        stop(running)


def test_port_0_turns_grpc_off() -> None:
    running = start({"VAE_WORKERS": "1", "VAE_GRPC_PORT": "0"})
    try:
        assert httpx.get(f"{running.base}/readyz", timeout=5).status_code == 200
        # the port the server would have been given is not served
        with pytest.raises(InferenceServerException):
            running.client().is_server_live(client_timeout=2)
    finally:
        stop(running)
