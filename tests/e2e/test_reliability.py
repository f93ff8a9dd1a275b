"""Overload, timeouts, body limits, API keys and SIGTERM against a real `vae-serve` process."""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import numpy as np
import orjson
from sklearn.datasets import load_digits

from tests.bundles import committed_repository
from tests.e2e.processes import free_port, running_server, serve

DIGITS = load_digits().data.astype(np.float32)
KEY_A = "rotation-key-a-4f9d2c7e1b"
KEY_B = "rotation-key-b-8a3e6f0d5c"
QUIET = {"VAE_LOG_LEVEL": "warning"}


def _npy(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


# 4096 rows of work per call: long enough (tens of ms) that calls overlap.
HEAVY_BODY = _npy(np.resize(DIGITS, (64, 64)))
HEAVY_URL = "/reconstruct?samples=64&seed=5"
NPY = {"content-type": "application/x-npy", "accept": "application/x-npy"}


def test_overload_is_refused_at_once_with_retry_after() -> None:
    env = {
        **QUIET,
        "VAE_WORKERS": "1",
        "VAE_MAX_CONCURRENCY": "1",
        "VAE_MAX_QUEUE": "1",
        "VAE_INLINE_MAX_VALUES": "0",
        "VAE_RETRY_AFTER_S": "3",
    }
    with running_server(env) as (base, _):
        expected = httpx.post(base + HEAVY_URL, content=HEAVY_BODY, headers=NPY).content

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=24)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
                calls = [http.post(HEAVY_URL, content=HEAVY_BODY, headers=NPY) for _ in range(24)]
                return list(await asyncio.gather(*calls))

        answers = asyncio.run(burst())
        served = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 503]
        assert len(served) + len(refused) == len(answers), {a.status_code for a in answers}
        assert served
        assert refused
        assert all(a.content == expected for a in served)  # the admitted got full answers
        for answer in refused:
            assert answer.headers["retry-after"] == "3"
            assert answer.json()["error"]["code"] == "overloaded"
        # and the worker is fine afterwards
        assert httpx.post(base + HEAVY_URL, content=HEAVY_BODY, headers=NPY).status_code == 200


def test_a_request_over_the_timeout_gets_503_and_the_server_goes_on() -> None:
    env = {**QUIET, "VAE_REQUEST_TIMEOUT_S": "0.001", "VAE_INLINE_MAX_VALUES": "0"}
    with running_server(env) as (base, _):
        answer = httpx.post(base + HEAVY_URL, content=HEAVY_BODY, headers=NPY, timeout=30)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "timeout"
        assert "VAE_REQUEST_TIMEOUT_S" in answer.json()["error"]["message"]
        assert answer.headers["retry-after"] == "1"
        assert httpx.get(base + "/readyz").status_code == 200


def _read_status_line(connection: socket.socket, seconds: float) -> bytes:
    connection.settimeout(seconds)
    received = b""
    while b"\r\n" not in received:
        chunk = connection.recv(4096)
        if not chunk:
            break
        received += chunk
    return received.split(b"\r\n", 1)[0]


def test_an_oversized_body_is_refused_before_it_is_sent() -> None:
    env = {**QUIET, "VAE_MAX_BODY_BYTES": "1048576"}
    with running_server(env) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        for path in ("/encode", "/v2/models/digits-vae/infer"):
            # Declared too large: the answer comes with no body byte sent.
            with socket.create_connection(("127.0.0.1", port)) as connection:
                connection.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100000000\r\n\r\n".encode()
                )
                assert _read_status_line(connection, 5) == b"HTTP/1.1 413 Request Entity Too Large"
            # Chunked, no length declared: refused once the limit is crossed, long before the
            # (never sent) end of the body.
            with socket.create_connection(("127.0.0.1", port)) as connection:
                connection.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n".encode()
                )
                chunk = b"x" * 65536
                for _ in range(20):  # 1.25 MiB: past the 1 MiB limit
                    connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                assert _read_status_line(connection, 5).startswith(b"HTTP/1.1 413")
        assert httpx.get(base + "/healthz").status_code == 200


def test_api_keys_over_tcp_and_never_in_the_logs() -> None:
    env = {"VAE_LOG_LEVEL": "debug", "VAE_WORKERS": "1", "VAE_API_KEYS": f"{KEY_A},{KEY_B}"}
    wrong = "not-the-key-0123456789abcdef"
    with running_server(env) as (base, process):
        body = {"inputs": DIGITS[:1].tolist()}
        assert httpx.post(base + "/encode", json=body).status_code == 401
        assert (
            httpx.post(base + "/encode", json=body, headers={"X-API-Key": wrong}).status_code == 403
        )
        bearer = {"Authorization": f"Bearer {KEY_A}"}
        assert httpx.post(base + "/encode", json=body, headers=bearer).status_code == 200
        assert httpx.get(base + "/models", headers={"X-API-Key": KEY_B}).status_code == 200
        assert httpx.get(base + "/readyz").status_code == 200  # open by default
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "API keys: 2 configured" in output
    # the request log ran at this level: one JSON line per request, refusals included
    requests = [
        orjson.loads(line) for line in output.splitlines() if '"vae_service.access"' in line
    ]
    assert [(r["method"], r["route"], r["status"]) for r in requests if r["path"] != "/readyz"] == [
        ("POST", "/encode", 401),
        ("POST", "/encode", 403),
        ("POST", "/encode", 200),
        ("GET", "/models", 200),
    ]
    for secret in (KEY_A, KEY_B, wrong):
        assert secret not in output


def test_a_weak_key_stops_start_up_without_printing_it() -> None:
    process = serve(
        "--model-repository", str(committed_repository()), "--port", str(free_port()),
        env={"VAE_API_KEYS": f"{KEY_A},hunter2"},
    )  # fmt: skip
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "API key #2 has 7 characters" in output
    assert "hunter2" not in output
    assert KEY_A not in output


@dataclass
class Outcome:
    sent: float
    done: float
    status: int | None  # None: a transport error
    error: str = ""
    exact: bool = False


def _client_loop(base: str, body: bytes, expected: bytes, stop: threading.Event,
                 outcomes: list[Outcome]) -> None:  # fmt: skip
    with httpx.Client(base_url=base, timeout=60) as http:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                answer = http.post(
                    "/reconstruct", content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as error:
                outcomes.append(Outcome(sent, time.monotonic(), None, repr(error)))
                return  # the server is going away; this client is done
            outcomes.append(
                Outcome(sent, time.monotonic(), answer.status_code, "", answer.content == expected)
            )


def test_sigterm_under_load_finishes_every_accepted_request() -> None:
    # JSON batches of 4096 rows: tens of ms each, so several are in flight at any moment.
    body = orjson.dumps({"inputs": np.resize(DIGITS, (4096, 64)).tolist()})
    env = {**QUIET, "VAE_WORKERS": "2", "VAE_SHUTDOWN_DRAIN_S": "20"}
    with running_server(env) as (base, process):
        expected = httpx.post(
            base + "/reconstruct", content=body, headers={"content-type": "application/json"},
            timeout=60,
        ).content  # fmt: skip
        assert orjson.loads(expected)["outputs"]
        stop = threading.Event()
        outcomes: list[Outcome] = []
        clients = [
            threading.Thread(target=_client_loop, args=(base, body, expected, stop, outcomes))
            for _ in range(6)
        ]
        for client in clients:
            client.start()
        time.sleep(2.0)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
        stop.set()
        for client in clients:
            client.join(timeout=60)
    stopped = time.monotonic() - signalled
    assert returncode == 0
    assert stopped < 20
    answered = [o for o in outcomes if o.status is not None]
    failed = [o for o in outcomes if o.status is None]
    # Every answer is complete and right: no 5xx, no truncated body, no wrong numbers.
    assert answered
    assert all(o.status == 200 and o.exact for o in answered)
    # Requests that reached the server before the signal (sent well before it) were all
    # answered: the drain finished them rather than dropping them.
    margin = 0.15
    early_failures = [o for o in failed if o.sent < signalled - margin]
    assert not early_failures, early_failures
    drained = [o for o in answered if o.sent < signalled < o.done]
    assert drained, "no request was in flight at SIGTERM; the test proved nothing"
    print(
        f"SIGTERM under load: {len(answered)} answered (all exact), {len(drained)} of them in "
        f"flight at the signal, {len(failed)} refused at connection level after it "
        f"({sorted({o.error.split('(')[0] for o in failed})}); exit 0 after {stopped:.2f} s"
    )
