"""Payload logging through a real `vae-serve` and a real HTTP sink on 127.0.0.1: each inference
request and its answer arrive as CloudEvents with the request's id and bytes; a sink that is
down or slow costs the requests nothing, and its events are dropped and counted."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.e2e.processes import free_port, running_server

DIGITS = load_digits().data.astype(np.float32)
ENV = {"VAE_HOST": "127.0.0.1", "VAE_WORKERS": "2", "VAE_LOG_LEVEL": "warning"}


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
