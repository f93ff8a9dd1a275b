"""Request ids and the JSON request log lines, against the real app.

The service's own lines are formatted by the formatter `vae-serve` installs
(service.observability.logs.json_formatter), the request lines by the app's `RequestLines`
(written at once here, not batched), and both are parsed back, so the test reads what a log
collector would.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from service.api.app import create_app
from service.observability.logs import (
    RequestIdFilter,
    json_formatter,
    logging_config,
)
from service.observability.request_context import RequestRecord, enter_request, leave_request
from service.observability.request_lines import ACCESS_LOGGER, RequestLines
from service.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITTED_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"
DIGITS = load_digits().data[:3].tolist()
KEY = "request-log-key-0123456789"
GENERATED = re.compile(r"[0-9a-f]{32}")
FIELDS = {
    "time", "level", "logger", "pid", "message", "request_id", "protocol", "method", "route",
    "path", "status", "latency_ms", "model", "version", "items", "batch_size", "queue_ms",
    "inference_ms", "decode_ms", "encode_ms", "client",
}  # fmt: skip


class JsonLines:
    """The JSON lines logged while it is installed, and the request lines of the apps it
    follows, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(json_formatter())
        self.handler.addFilter(RequestIdFilter())

    def follow(self, app: Any) -> None:
        """Take the request lines of `app` (create_app's), each as soon as it is made."""
        lines: RequestLines | None = app.request_lines
        if lines is not None:
            lines.write = lambda chunk: self.stream.write(chunk.decode())
            lines.flush_s = 0

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["logger"] == ACCESS_LOGGER]

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()


@pytest.fixture
def logged() -> Iterator[JsonLines]:
    lines = JsonLines()
    logger = logging.getLogger("vae_service")
    previous = logger.level
    logger.addHandler(lines.handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(lines.handler)
        logger.setLevel(previous)


@pytest.fixture
def logged_client(client: TestClient, logged: JsonLines) -> TestClient:
    logged.follow(client.app)
    return client


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("request-log-repository")
    shutil.copytree(COMMITTED_BUNDLE, root / "digits-vae" / "1")
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "fastapi-routes"])
def client(request: pytest.FixtureRequest, repository: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(model_repository=repository, fast_path=request.param, api_keys=KEY)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_one_json_line_per_request_with_every_field(
    logged_client: TestClient, logged: JsonLines
) -> None:
    answer = logged_client.post(
        "/models/digits-vae/reconstruct",
        json={"inputs": DIGITS},
        headers={**AUTH, "X-Request-ID": "order-42/retry-1"},
    )
    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] == "order-42/retry-1"
    (line,) = logged.requests()
    assert set(line) == FIELDS
    assert line["request_id"] == "order-42/retry-1"
    assert line["protocol"] == "http"
    assert line["level"] == "INFO"
    assert line["message"] == "POST /models/digits-vae/reconstruct 200"
    assert line["method"] == "POST"
    assert line["route"] == "/models/{name}/reconstruct"
    assert line["path"] == "/models/digits-vae/reconstruct"
    assert line["status"] == 200
    assert (line["model"], line["version"]) == ("digits-vae", "1")
    assert line["items"] == line["batch_size"] == 3
    assert line["latency_ms"] > 0
    for stage in ("queue_ms", "inference_ms", "decode_ms", "encode_ms"):
        assert line[stage] >= 0
    assert line["latency_ms"] >= line["inference_ms"]
    assert line["client"] == "testclient"
    assert isinstance(line["pid"], int)
    assert line["time"].endswith("+00:00")


def test_a_request_id_is_generated_when_none_or_an_unsafe_one_is_sent(
    logged_client: TestClient, logged: JsonLines
) -> None:
    unsafe = [b"", b"has space", b"x" * 129, b"tab\tand\x7fdelete", "caf\u00e9".encode("latin-1")]
    sent: list[str] = []
    for value in [None, *unsafe]:
        headers = [(b"Authorization", f"Bearer {KEY}".encode())]
        if value is not None:
            headers.append((b"X-Request-ID", value))
        answer = logged_client.post("/encode", json={"inputs": DIGITS[:1]}, headers=headers)
        assert answer.status_code == 200
        sent.append(answer.headers["X-Request-ID"])
    assert all(GENERATED.fullmatch(request_id) for request_id in sent)
    assert len(set(sent)) == len(sent)  # a new one each time
    assert [line["request_id"] for line in logged.requests()] == sent
    longest = "x" * 128
    answer = logged_client.post("/encode", json={"inputs": DIGITS[:1]},
                         headers={**AUTH, "X-Request-ID": longest})  # fmt: skip
    assert answer.headers["X-Request-ID"] == longest


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "route", "model"),
    [
        ("POST", "/encode", {"inputs": [[1.0]]}, AUTH, 422, "/encode", "digits-vae"),
        ("POST", "/models/nope/decode", {"latents": [[0.0]]}, AUTH, 404,
         "/models/{name}/decode", None),
        ("GET", "/models/nope", None, AUTH, 404, "/models/{name}", None),
        ("GET", "/no/such/route", None, AUTH, 404, "-", None),
        ("POST", "/v2/models/nope/infer", {"inputs": []}, AUTH, 404, "/v2/models/{name}/infer",
         None),
        ("POST", "/anomaly-score", {"inputs": DIGITS}, {}, 401, "/anomaly-score", None),
        ("GET", "/models", None, {"X-API-Key": "wrong-key-0123456789abc"}, 403, "/models", None),
        ("GET", "/healthz", None, {}, 200, "/healthz", None),
    ],
)  # fmt: skip
def test_errors_and_refusals_carry_an_id_and_get_their_line(
    logged_client: TestClient,
    logged: JsonLines,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    route: str,
    model: str | None,
) -> None:
    answer = logged_client.request(
        method, path, json=body, headers={**headers, "X-Request-ID": f"case-{status}"}
    )
    assert answer.status_code == status
    assert answer.headers["X-Request-ID"] == f"case-{status}"
    (line,) = logged.requests()
    assert (line["request_id"], line["status"], line["route"]) == (f"case-{status}", status, route)
    # only a model that resolved is named, never the client's text
    assert line["model"] == model
    assert line["items"] is None


def test_keys_bodies_and_queries_never_reach_the_log(
    logged_client: TestClient, logged: JsonLines
) -> None:
    marked = {"inputs": [[12.3456789] * 64]}
    assert logged_client.post("/encode?seed=31337", json=marked, headers=AUTH).status_code == 200
    wrong = {"X-API-Key": "wrong-key-abcdefghijk"}
    assert logged_client.post("/encode", json=marked, headers=wrong).status_code == 403
    text = logged.stream.getvalue()
    assert len(logged.requests()) == 2
    for secret in (KEY, "wrong-key-abcdefghijk", "31337", "12.345"):
        assert secret not in text


def test_lines_logged_while_answering_carry_the_request_id(logged: JsonLines) -> None:
    record = RequestRecord("abc-123")
    token = enter_request(record)
    try:
        logging.getLogger("vae_service.operations").warning("something odd")
    finally:
        leave_request(token)
    logging.getLogger("vae_service.operations").warning("outside any request")
    inside, outside = logged.lines()
    assert inside["request_id"] == "abc-123"
    assert "request_id" not in outside


def test_text_format_leaves_request_lines_to_uvicorn(repository: Path, logged: JsonLines) -> None:
    settings = ServiceSettings(model_repository=repository, log_format="text")
    app = create_app(settings)
    logged.follow(app)
    with TestClient(app) as client:
        answer = client.post("/encode", json={"inputs": DIGITS})
    assert answer.headers["X-Request-ID"]  # ids are returned in either format
    assert logged.requests() == []


def test_vae_serve_configures_json_or_text() -> None:
    json_config = logging_config(ServiceSettings(log_format="json", log_level="warning"))
    assert json_config["root"]["level"] == "WARNING"
    assert json_config["formatters"]["json"]["()"] == "service.observability.logs.json_formatter"
    # uvicorn's lines go through the same JSON handler
    assert json_config["loggers"]["uvicorn"]["propagate"] is True
    text_config = logging_config(ServiceSettings(log_format="text"))
    assert "access" in text_config["handlers"]  # uvicorn's own access log
    assert text_config["root"]["handlers"] == ["plain"]


def test_batched_requests_log_the_size_of_their_batch(repository: Path, logged: JsonLines) -> None:
    settings = ServiceSettings(
        model_repository=repository,
        dynamic_batching=True,
        batching_max_batch_size=3,
        batching_max_delay_us=1_000_000,
    )
    app = create_app(settings)
    logged.follow(app)
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda row: client.post("/encode", json={"inputs": [row]}), DIGITS))
    assert all(answer.status_code == 200 for answer in answers)
    lines = logged.requests()
    assert len(lines) == 3
    for line in lines:
        assert (line["items"], line["batch_size"]) == (1, 3)
        assert line["queue_ms"] >= 0
        assert line["inference_ms"] > 0
