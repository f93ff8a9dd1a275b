"""Payload logging through a real `vae-serve` and a real HTTP sink on 127.0.0.1: each inference
request and its answer arrive as CloudEvents with the request's id and bytes; a sink that is
down or slow costs the requests nothing, and its events are dropped and counted."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from service.grpc import inference_pb2 as pb
from tests.e2e.processes import free_port, running_server
from tests.e2e.test_grpc import infer_input, start, stop

DIGITS = load_digits().data.astype(np.float32)
ENV = {"VAE_HOST": "127.0.0.1", "VAE_WORKERS": "2", "VAE_LOG_LEVEL": "warning"}
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


@dataclass
class Sink:
    url: str
    delay_s: float = 0.0
    events: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_id(self) -> dict[str, dict[str, tuple[dict[str, str], bytes]]]:
        with self.lock:
            found: dict[str, dict[str, tuple[dict[str, str], bytes]]] = {}
            for headers, body in self.events:
                found.setdefault(headers["ce-id"], {})[headers["ce-type"]] = (headers, body)
            return found


@pytest.fixture
def sink() -> Iterator[Sink]:
    port = free_port()
    state = Sink(f"http://127.0.0.1:{port}/events")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            time.sleep(state.delay_s)
            with state.lock:
                state.events.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("the sink did not get the events in time")


def metric(base: str, outcome: str) -> float:
    total = 0.0
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(f'vae_payload_log_events_total{{outcome="{outcome}"}}'):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_each_inference_arrives_as_two_cloudevents(sink: Sink) -> None:
    env = {**ENV, "VAE_PAYLOAD_LOG_URL": sink.url}
    with running_server(env) as (base, _):
        sent: dict[str, tuple[bytes, bytes]] = {}
        for i in range(6):
            body = json.dumps({"inputs": [DIGITS[i].tolist()]}).encode()
            with httpx.Client() as client:  # either worker
                answer = client.post(
                    f"{base}/models/digits-vae/anomaly-score",
                    content=body,
                    headers={"content-type": "application/json", "x-request-id": f"case-{i}"},
                )
            assert answer.status_code == 200
            sent[f"case-{i}"] = (body, answer.content)
        tensor = {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": DIGITS[6].tolist()}
        v2 = httpx.post(f"{base}/v2/models/digits-vae/infer", json={"inputs": [tensor]})
        assert v2.status_code == 200
        assert httpx.get(f"{base}/models/nope").status_code == 404
        httpx.post(f"{base}/models/nope/anomaly-score", json={"inputs": [[1.0]]})  # no model
        wait_for(lambda: len(sink.events) >= 14)
        time.sleep(0.5)  # and nothing more comes
        events = sink.by_id()
        assert len(sink.events) == 14  # 7 inferences x (request, response); the 404s none
        for request_id, (body, answered) in sent.items():
            request = events[request_id]["org.kubeflow.serving.inference.request"]
            response = events[request_id]["org.kubeflow.serving.inference.response"]
            assert request[1] == body
            assert response[1] == answered
            assert request[0]["ce-specversion"] == "1.0"
            assert request[0]["ce-source"] == "/models/digits-vae/versions/1"
            assert request[0]["content-type"] == "application/json"
            assert response[0]["ce-vaestatus"] == "200"
            assert response[0]["ce-vaeroute"] == "/models/{name}/anomaly-score"
        v2_events = events[v2.headers["x-request-id"]]
        assert v2_events["org.kubeflow.serving.inference.response"][1] == v2.content
        assert metric(base, "sent") == 14


def test_a_body_above_the_limit_goes_without_its_data(sink: Sink) -> None:
    env = {**ENV, "VAE_WORKERS": "1", "VAE_PAYLOAD_LOG_URL": sink.url}
    env["VAE_PAYLOAD_LOG_MAX_BYTES"] = "200"  # one digit as JSON is ~400 bytes
    with running_server(env) as (base, _):
        answer = httpx.post(
            f"{base}/models/digits-vae/reconstruct", json={"inputs": [DIGITS[0].tolist()]}
        )
        assert answer.status_code == 200
        wait_for(lambda: len(sink.events) == 2)
        for headers, body in sink.events:
            assert headers["ce-vaedataomitted"] == "too-large"
            assert body == b""


def test_a_sink_that_is_down_or_slow_costs_the_requests_nothing(sink: Sink) -> None:
    down = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    env = {**ENV, "VAE_WORKERS": "1", "VAE_PAYLOAD_LOG_URL": down}
    with running_server(env) as (base, _):
        for i in range(5):
            answer = httpx.post(
                f"{base}/models/digits-vae/anomaly-score", json={"inputs": [DIGITS[i].tolist()]}
            )
            assert answer.status_code == 200
        wait_for(lambda: metric(base, "failed") >= 10)

    sink.delay_s = 1.0  # each event takes a second: 4 senders drain 4 a second
    env = {**env, "VAE_PAYLOAD_LOG_URL": sink.url, "VAE_PAYLOAD_LOG_QUEUE": "4"}
    with running_server(env) as (base, _):
        began = time.monotonic()
        for i in range(30):
            answer = httpx.post(
                f"{base}/models/digits-vae/anomaly-score", json={"inputs": [DIGITS[i].tolist()]}
            )
            assert answer.status_code == 200
        assert time.monotonic() - began < 5.0  # 30 requests, never waiting on the sink
        dropped = metric(base, "dropped")
        assert dropped >= 60 - 4 - 4 - 2 * 5  # 60 events; a queue of 4 and 4 in flight


def test_grpc_inferences_arrive_as_protobuf_events(sink: Sink) -> None:
    """Unary and streamed gRPC calls: the request message and its answer as protobuf bytes
    that parse back into what was sent and received; a refused message logs its error."""
    running = start({**ENV, "VAE_PAYLOAD_LOG_URL": sink.url})
    try:
        client = running.client()
        unary = client.infer(
            "digits-vae", [infer_input("x", DIGITS[:2])], headers={"x-request-id": "grpc-1"}
        )
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for index in range(3):
                row = DIGITS[index][None]
                client.async_stream_infer(
                    "digits-vae-encoder", [infer_input("x", row)], request_id=f"stream-{index}"
                )
            client.async_stream_infer(
                "digits-vae", [infer_input("x", np.zeros((1, 5), np.float32))], request_id="bad"
            )
            streamed = [answers.get(timeout=30) for _ in range(4)]
        finally:
            client.stop_stream()
        assert [error is None for _, error in streamed] == [True, True, True, False]
        wait_for(lambda: len(sink.events) >= 10)
        time.sleep(0.5)
        assert len(sink.events) == 10  # 5 inferences x (request, response)
        events = sink.by_id()

        request, response = (events["grpc-1"][kind] for kind in (REQUEST, RESPONSE))
        assert request[0]["content-type"].startswith("application/x-protobuf")
        assert request[0]["ce-vaeroute"] == "/inference.GRPCInferenceService/ModelInfer"
        sent = pb.ModelInferRequest.FromString(request[1])
        assert sent.model_name == "digits-vae"
        assert np.frombuffer(sent.raw_input_contents[0], np.float32).tolist() == (
            DIGITS[:2].ravel().tolist()
        )
        answered = pb.ModelInferResponse.FromString(response[1])
        names = [output.name for output in answered.outputs]
        at = names.index("anomaly_score")
        dtype = {"FP32": np.float32, "FP64": np.float64}[answered.outputs[at].datatype]
        scores = np.frombuffer(answered.raw_output_contents[at], dtype)
        assert scores.tolist() == unary.as_numpy("anomaly_score").ravel().tolist()
        assert response[0]["ce-vaestatus"] == "200"

        for index in range(3):
            streamed_answer = events[f"stream-{index}"][RESPONSE]
            assert streamed_answer[0]["ce-vaeroute"].endswith("/ModelStreamInfer")
            encoded = pb.ModelInferResponse.FromString(streamed_answer[1])
            assert encoded.model_name == "digits-vae-encoder"
        refused = events["bad"][RESPONSE]
        assert refused[0]["ce-vaestatus"] == "422"  # what REST answers the same shape
        assert refused[0]["content-type"] == "application/json"
        assert "expected shape" in json.loads(refused[1])["error"]
    finally:
        stop(running)


def test_a_grpc_message_above_the_limit_goes_without_its_data(sink: Sink) -> None:
    """A gRPC message larger than VAE_PAYLOAD_LOG_MAX_BYTES is measured, not copied: its
    events carry no data, as an HTTP body's do."""
    env = {**ENV, "VAE_WORKERS": "1", "VAE_PAYLOAD_LOG_URL": sink.url}
    running = start({**env, "VAE_PAYLOAD_LOG_MAX_BYTES": "200"})  # 8 digits: ~2 kB raw
    try:
        running.client().infer(
            "digits-vae", [infer_input("x", DIGITS[:8])], headers={"x-request-id": "big"}
        )
        wait_for(lambda: len(sink.events) == 2)
        for headers, body in sink.events:
            assert headers["ce-vaedataomitted"] == "too-large"
            assert body == b""
    finally:
        stop(running)
