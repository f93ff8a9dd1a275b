"""Hostile clients against a real `vae-serve` on 127.0.0.1 (two workers, API keys on).

Every request here is one a buggy or hostile caller could send. Each must be answered with its
4xx within a second of wall time, cost the worker that took it less than 8x its size at the
peak (plus a fixed floor for what any request costs), and leave no worker lost; at the end
every worker's resident size is back within 64 MiB of where it started (issue 18). The peak is
the kernel's own high-water mark of the worker (VmHWM, reset before each request).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest

from tests.e2e.hostile import (
    MIB,
    Cost,
    can_reset_peaks,
    exchange,
    is_closed,
    measured,
    read_all,
    resident,
    statuses,
    worker_pids,
)
from tests.e2e.processes import running_server

KEY = "hostile-suite-key-7c1e9b3a5d"
AUTH = {"x-api-key": KEY}
JSON = {**AUTH, "content-type": "application/json"}
HEADER_TIMEOUT_S = 2
REQUEST_TIMEOUT_S = 3
ENV = {
    "VAE_LOG_LEVEL": "warning",
    "VAE_WORKERS": "2",
    "VAE_API_KEYS": KEY,
    "VAE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "VAE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
}
# What any request may cost a worker on top of 8x its size: interpreter and allocator noise, and
# the fixed-size chunks a large body is parsed in (service/codecs/json_read.py). Before issue 18, a
# 36 kB body cost +244 MiB and 8 MB of short floats ~15x: both far above.
FLOOR = 16 * MIB
# The bounds the issue sets.
WALL_SECONDS = 1.0
SIZE_MULTIPLE = 8
RETURNED_WITHIN = 64 * MIB

# Peak memory needs the kernel's clear_refs; where it is missing, the peak checks say so and
# every other check still runs.
PEAKS = can_reset_peaks()


def assert_peak_within(cost: Cost, allowed: int) -> None:
    if not PEAKS:
        warnings.warn(
            "peak memory not measured: /proc/PID/clear_refs is not writable", stacklevel=2
        )
        return
    assert cost.peak_extra < allowed, f"peak +{cost.peak_extra / MIB:.1f} MiB"


@dataclass
class Server:
    base: str
    port: int
    pids: list[int]
    baseline: dict[int, int] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server(ENV) as (base, process):
        pids = worker_pids(process)
        assert len(pids) == 2, pids
        served = Server(base, int(base.rsplit(":", 1)[1]), pids)
        # Warm both workers (each lazily builds what a first request needs), then take the
        # sizes the suite must come back to.
        for _ in range(40):
            served.client.post(
                base + "/reconstruct", json={"inputs": [[1.0] * 64] * 64}, headers=AUTH
            )
        time.sleep(1.5)
        served.baseline = {pid: resident(pid) for pid in pids}
        yield served
        served.client.close()
        # No worker was lost (uvicorn restarts a dead one under a new PID) ...
        assert worker_pids(process) == pids
        # ... and the memory came back (large requests trigger a trim a second later).
        time.sleep(2.5)
        grown = {pid: (resident(pid) - served.baseline[pid]) // MIB for pid in pids}
        assert all(rise * MIB <= RETURNED_WITHIN for rise in grown.values()), grown


def digits_rows(count: int, features: int = 64) -> list[list[float]]:
    values = np.random.default_rng(0).integers(0, 17, size=(count, features)).astype(float)
    return values.tolist()  # type: ignore[no-any-return]


def npy(header: str, data: bytes = b"", *, version: bytes = b"\x01\x00") -> bytes:
    text = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    length = len(text).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + length + text.encode("latin-1") + data


def png(width: int, height: int, *, text: bytes = b"", pixels: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = pixels if pixels is not None else b"".join(b"\x00" + b"\x80" * width for _ in range(8))
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    extra = chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(text)) if text else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + head
        + extra
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def multipart(parts: int) -> tuple[bytes, str]:
    boundary = "hostileboundary"
    one = png(8, 8)
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + one
        + b"\r\n"
        for i in range(parts)
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Attack:
    """One hostile request: how to send it, the statuses that refuse it well, and words its
    error must contain."""

    path: str
    body: Callable[[], bytes]
    expected: tuple[int, ...]
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    words: tuple[str, ...] = ()
    method: str = "POST"


def _json(document: object) -> Callable[[], bytes]:
    return lambda: orjson.dumps(document)


def _mixed_string(numbers: int, width: int) -> bytes:
    # The first finding: numpy made this a unicode array `width` wide per element.
    return b'{"inputs": [[' + b"1," * numbers + b'"' + b"x" * width + b'"]]}'


def _shape_axes(axes: int) -> bytes:
    shape = b"[" + b",".join([b"99999999"] * axes) + b"]"
    tensor = b'{"name": "x", "datatype": "FP32", "shape": ' + shape + b', "data": [1]}'
    return b'{"inputs": [' + tensor + b"]}"


def _floats(items: int, features: int, number: bytes = b"0.5") -> bytes:
    row = b"[" + b",".join([number] * features) + b"]"
    return b'{"inputs": [' + b",".join([row] * items) + b"]}"


ATTACKS: dict[str, Attack] = {
    "36 kB: one long string among numbers": Attack(
        "/reconstruct", lambda: _mixed_string(500, 36_000), (422,), words=("string",)
    ),
    "2 MiB: one long string among numbers": Attack(
        "/reconstruct", lambda: _mixed_string(200_000, 1_600_000), (422,), words=("string",)
    ),
    "v2 data: one long string among numbers": Attack(
        "/v2/models/digits-vae/infer",
        lambda: (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ['
            + b"1," * 63
            + b'"'
            + b"x" * 36_000
            + b'"]}]}'
        ),
        (400,),
        words=("string",),
    ),
    "v2 shape of 32,000 axes": Attack(
        "/v2/models/digits-vae/infer", lambda: _shape_axes(32_000), (400,), words=("axes",)
    ),
    "v2 shape of 64-digit axes": Attack(
        "/v2/models/digits-vae/infer",
        lambda: _shape_axes(1).replace(b"99999999", b"9" * 64),
        (400,),
    ),
    "8 MB of empty lists": Attack(
        "/reconstruct", lambda: b'{"inputs": [' + b"[]," * 2_700_000 + b"[]]}", (413, 422)
    ),
    "16 MiB of empty lists (above the route's limit)": Attack(
        "/reconstruct", lambda: b'{"inputs": [' + b"[]," * 5_600_000 + b"[]]}", (413,)
    ),
    "1 MB of floats, one feature too many": Attack(
        "/anomaly-score", lambda: _floats(4096, 65), (422,), words=("numbers",)
    ),
    "8 MB of short floats, 500 an item": Attack(
        "/anomaly-score", lambda: _floats(4096, 500, b"1e1"), (422,), words=("numbers",)
    ),
    "1 MB of floats in one item": Attack(
        "/anomaly-score", lambda: _floats(1, 260_000), (422,), words=("inputs",)
    ),
    "2 MB of floats in one item": Attack(
        "/anomaly-score", lambda: _floats(1, 520_000), (422,), words=("numbers",)
    ),
    "one true among 4,000 rows of numbers": Attack(
        "/encode",
        lambda: orjson.dumps({"inputs": [*digits_rows(2000), [True] * 64, *digits_rows(2000)]}),
        (422,),
        words=("boolean",),
    ),
    "nesting 100,000 deep": Attack(
        "/encode", lambda: b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", (422,)
    ),
    "5,000 nested objects": Attack(
        "/encode", lambda: b'{"a": ' + b'{"b": ' * 5000 + b"1" + b"}" * 5000 + b"}", (413, 422)
    ),
    "100,000 keys": Attack(
        "/encode",
        lambda: b"{" + b",".join(b'"k%d": 1' % i for i in range(100_000)) + b"}",
        (413,),
    ),
    "a 60 kB list as n (error echoes an excerpt)": Attack(
        "/sample", _json({"n": list(range(12_000))}), (422,), words=("n:",)
    ),
    "a 400 kB list as n (above the route's limit)": Attack(
        "/sample", _json({"n": list(range(80_000))}), (413,)
    ),
    "n of a billion": Attack("/sample", _json({"n": 10**9}), (413,), words=("n:",)),
    "seed of 2**63": Attack("/sample", _json({"n": 1, "seed": 2**63}), (422,), words=("seed",)),
    "temperature of 1e308": Attack(
        "/sample", _json({"n": 4, "temperature": 1e308}), (422,), words=("temperature",)
    ),
    "samples of 10**6": Attack(
        "/reconstruct", _json({"inputs": digits_rows(1), "samples": 10**6}), (413,)
    ),
    "NaN tokens": Attack("/encode", lambda: b'{"inputs": [[NaN, 1]]}', (422,)),
    "a number of 100,000 digits": Attack(
        "/encode", lambda: b'{"inputs": [[' + b"9" * 100_000 + b"]]}", (422,)
    ),
    "a 10 kB Content-Type": Attack(
        "/encode",
        lambda: b'{"inputs": [[1]]}',
        (415,),
        headers={**AUTH, "content-type": "text/" + "x" * 10_000},
    ),
    "npy: a terabyte shape in 100 bytes": Attack(
        "/encode",
        lambda: npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2**38, 1024), }"),
        (400, 422),
        headers={**AUTH, "content-type": "application/x-npy"},
    ),
    "npy: 40 axes": Attack(
        "/encode",
        lambda: npy("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % ("1," * 40)),
        (400, 422),
        headers={**AUTH, "content-type": "application/x-npy"},
    ),
    "npy: header length beyond the body": Attack(
        "/encode",
        lambda: b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{}",
        (400,),
        headers={**AUTH, "content-type": "application/x-npy"},
    ),
    "npy: a 60 kB header": Attack(
        "/encode",
        lambda: npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64), %s}" % ("'x': 1, " * 7000),
            version=b"\x02\x00",
        ),
        (400,),
        headers={**AUTH, "content-type": "application/x-npy"},
    ),
    "npy: object dtype": Attack(
        "/encode",
        lambda: npy("{'descr': '|O', 'fortran_order': False, 'shape': (1, 64), }", b"\0" * 512),
        (422,),
        headers={**AUTH, "content-type": "application/x-npy"},
    ),
    "v2: header length beyond the body": Attack(
        "/v2/models/digits-vae/infer",
        lambda: b'{"inputs": []}',
        (400,),
        headers={**JSON, "inference-header-content-length": "99999999"},
    ),
    "v2: header length of 5,000 digits": Attack(
        "/v2/models/digits-vae/infer",
        lambda: b'{"inputs": []}',
        (400,),
        headers={**JSON, "inference-header-content-length": "9" * 5000},
    ),
    "v2: binary size that lies": Attack(
        "/v2/models/digits-vae/infer",
        lambda: (
            (
                b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], '
                b'"parameters": {"binary_data_size": 256}}]}'
            )
            + b"\0" * 16
        ),
        (400,),
        headers={**JSON, "inference-header-content-length": "116"},
    ),
    "PNG bomb: 100,000 x 100,000 pixels in its header": Attack(
        "/anomaly-score",
        lambda: png(100_000, 100_000),
        (413,),
        headers={**AUTH, "content-type": "image/png"},
    ),
    "PNG with 8 MB of compressed text": Attack(
        "/anomaly-score",
        lambda: png(8, 8, text=b"a" * 8_000_000),
        (200, 400, 413),
        headers={**AUTH, "content-type": "image/png"},
    ),
    "multipart of 5,000 images": Attack(
        "/anomaly-score", lambda: multipart(5000)[0], (413,), headers={**AUTH}
    ),
}
# The multipart attack needs its boundary in the Content-Type.
ATTACKS["multipart of 5,000 images"].headers["content-type"] = multipart(1)[1]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_hostile_body_is_refused_fast_and_cheaply(server: Server, name: str) -> None:
    attack = ATTACKS[name]
    body = attack.body()

    def send() -> httpx.Response:
        return server.client.request(
            attack.method, server.base + attack.path, content=body, headers=attack.headers
        )

    response, cost = measured(server.pids, send)
    assert isinstance(response, httpx.Response)
    assert response.status_code in attack.expected, (response.status_code, response.text[:300])
    assert cost.seconds < WALL_SECONDS, f"{cost.seconds:.2f} s"
    assert_peak_within(cost, SIZE_MULTIPLE * len(body) + FLOOR)
    if response.status_code >= 400:
        # an error never echoes the request back: a short, escaped excerpt at most
        assert len(response.content) < 2048, len(response.content)
        text = response.text.lower()
        assert all(word.lower() in text for word in attack.words), response.text


def test_a_1_mib_header_on_an_open_path_is_refused_before_authentication(server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n"
    answer, cost = measured(server.pids, lambda: exchange(server.port, request))
    assert statuses(answer) == [431]
    assert cost.seconds < WALL_SECONDS
    assert_peak_within(cost, FLOOR)


def test_a_long_head_behind_a_short_request_in_one_read_is_refused(server: Server) -> None:
    """Two pipelined requests in one send: the first is answered, and the second's 1 MiB head,
    arriving in the same reads, is still counted against the head limit."""
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n"
    answer, cost = measured(server.pids, lambda: exchange(server.port, first + second))
    assert statuses(answer) == [200, 431]
    assert cost.seconds < WALL_SECONDS
    assert_peak_within(cost, FLOOR)


def test_20000_header_lines_are_refused(server: Server) -> None:
    lines = b"".join(b"X-H%d: 1\r\n" % i for i in range(20_000))
    answer, cost = measured(
        server.pids, lambda: exchange(server.port, b"GET /healthz HTTP/1.1\r\n" + lines + b"\r\n")
    )
    assert statuses(answer) == [431]
    assert cost.seconds < WALL_SECONDS


@pytest.mark.parametrize(
    ("length", "expected"), [("9" * 5000, 400), ("99999999999", 413), ("8" * 18, 400)]
)
def test_a_content_length_no_body_can_have_is_refused_unread(
    server: Server, length: str, expected: int
) -> None:
    request = (
        f"POST /encode HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        '{"inputs": [[1]]}'
    ).encode()
    answer, cost = measured(server.pids, lambda: exchange(server.port, request, timeout=3))
    assert statuses(answer) == [expected], answer[:200]
    assert cost.seconds < WALL_SECONDS


def test_a_refused_upload_gets_its_answer_not_a_reset(server: Server) -> None:
    """A 20 MiB body refused from its Content-Length while the client is still sending it:
    the server lingers before closing, so the client reads the 413 every time instead of a
    connection reset (a close with unread bytes makes the kernel send RST)."""
    head = (
        f"POST /reconstruct HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {20 * MIB}\r\n\r\n"
    ).encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(head)

            def upload(target: socket.socket = connection) -> None:
                with contextlib.suppress(OSError):
                    target.sendall(b"0" * (20 * MIB))

            sender = threading.Thread(target=upload, daemon=True)
            sender.start()
            answer = read_all(connection, 5)
            sender.join(timeout=10)
        assert statuses(answer) == [413], answer[:200]


def test_a_100_kb_url_is_refused(server: Server) -> None:
    answer = exchange(server.port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [431]


@pytest.mark.parametrize(
    "framing",
    [
        # Content-Length and Transfer-Encoding together: the classic smuggling framing
        b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\nGET /models HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
        b"{}{}GET /models HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /encode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
        b"0\r\n\r\n",
        b"POST /encode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffffffffffff\r\n",
        b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /encode HTTP/1.1\r\nHost: x\r\n Content-Length: 4\r\n\r\n{}{}",
    ],
)
def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(
    server: Server, framing: bytes
) -> None:
    answer = exchange(server.port, framing, timeout=3)
    codes = statuses(answer)
    # One refusal (400 from the parser, or the keyless 401), never a second, smuggled answer.
    assert len(codes) == 1, answer[:300]
    assert codes[0] in (400, 401), answer[:300]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/ui/../encode", {}),
        ("/ui/%2e%2e/encode", {}),
        ("//encode", {}),
        ("/healthz/../encode", {}),
        ("/%65ncode", {}),
        ("/encode?x=/healthz", {}),
        ("/encode/", {}),
        ("/ENCODE", {}),
        ("/encode", {"x-api-key": "wrong" + KEY}),
        ("/encode", {"authorization": "Basic " + KEY}),
        ("/encode", {"authorization": "Bearer"}),
        ("/v2/models/digits-vae/infer?api_key=" + KEY, {}),
        ("/admin/reload", {}),
    ],
)
def test_path_and_key_tricks_never_reach_a_protected_route(
    server: Server, path: str, headers: dict[str, str]
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        + b'Content-Length: 17\r\n\r\n{"inputs": [[1]]}'
    )
    codes = statuses(exchange(server.port, request, timeout=3))
    assert codes, "no answer"
    assert codes[0] in (401, 403, 404, 405), codes


def test_duplicate_key_headers_use_the_first(server: Server) -> None:
    request = (
        b"POST /encode HTTP/1.1\r\nHost: x\r\nX-API-Key: not-the-key-at-all-xx\r\n"
        + f"X-API-Key: {KEY}\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{"inputs": [[1]]}'
    )
    assert statuses(exchange(server.port, request, timeout=3))[:1] == [403]


def test_caches_keyed_by_headers_stay_small(server: Server) -> None:
    """300 requests with distinct 8 kB Content-Type and Accept values (under the head limit):
    the memoised parsers keep none of them (service.codecs.media keeps short values only)."""
    rows = {"inputs": digits_rows(1)}

    def burst() -> list[int]:
        codes = []
        for i in range(300):
            headers = {
                **AUTH,
                "content-type": f"application/json; v={i}; pad=" + "a" * 7000,
                "accept": f"application/json; q=1, x/{i}; pad=" + "b" * 7000,
            }
            codes.append(
                server.client.post(server.base + "/encode", json=rows, headers=headers).status_code
            )
        return codes

    before = {pid: resident(pid) for pid in server.pids}
    codes, _ = measured(server.pids, burst)
    assert set(codes) == {200}
    grown = max(resident(pid) - before[pid] for pid in server.pids)
    assert grown < 8 * MIB, f"+{grown / MIB:.1f} MiB"


def test_slow_and_silent_clients_are_cut_off_while_health_answers_fast(server: Server) -> None:
    """200 connections that trickle a request head, 5 that send nothing, 5 whose body never
    ends: each is answered 408 and closed by its timeout, and /healthz keeps answering in
    under 100 ms meanwhile."""
    port = server.port

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=10)

    trickling = [connect() for _ in range(200)]
    silent = [connect() for _ in range(5)]
    unfinished = []
    for _ in range(5):
        connection = connect()
        connection.sendall(
            b"POST /reconstruct HTTP/1.1\r\nHost: x\r\n"
            + f"X-API-Key: {KEY}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"inputs": [[1'
        )
        unfinished.append(connection)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
    worst = 0.0
    stop = threading.Event()

    def trickle() -> None:
        sent = 0
        while not stop.is_set():
            for connection in trickling:
                with contextlib.suppress(OSError):  # cut off already: that is the point
                    connection.sendall(head[sent : sent + 1] if sent < len(head) else b"a")
            sent += 1
            time.sleep(0.2)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        with httpx.Client(base_url=server.base, timeout=5) as health:
            began = time.monotonic()
            while time.monotonic() - began < REQUEST_TIMEOUT_S + 1.5:
                asked = time.perf_counter()
                assert health.get("/healthz").status_code == 200
                worst = max(worst, time.perf_counter() - asked)
                time.sleep(0.05)
    finally:
        stop.set()
        feeder.join()
    assert worst < 0.1, f"/healthz took {worst * 1000:.0f} ms"
    for connection in unfinished:  # cut off by the protocol's body timer, with its answer
        assert statuses(read_all(connection, 1)) == [408]
        connection.close()
    for group, name in ((trickling, "trickling"), (silent, "silent")):
        closed = sum(is_closed(connection) for connection in group)
        for connection in group:
            connection.close()
        assert closed == len(group), f"{name}: {closed} of {len(group)} cut off"
    # Refused before any request existed, yet counted (service.observability.metrics).
    scrape = server.client.get(server.base + "/metrics").text
    line = next(
        row
        for row in scrape.splitlines()
        if row.startswith('vae_connections_refused_total{reason="head_timeout"}')
    )
    assert float(line.split()[-1]) >= 205
    line = next(
        row
        for row in scrape.splitlines()
        if row.startswith('vae_connections_refused_total{reason="body_timeout"}')
    )
    assert float(line.split()[-1]) >= 5


def test_the_connection_cap_refuses_at_once() -> None:
    """One worker, a cap of 16: the 17th connection is answered 503 with Retry-After and
    closed, while the 16 open ones are still served."""
    env = {**ENV, "VAE_WORKERS": "1", "VAE_MAX_CONNECTIONS": "16", "VAE_RETRY_AFTER_S": "2"}
    with running_server(env) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
        try:
            time.sleep(0.3)
            refused = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
            assert statuses(refused) == [503]
            assert b"retry-after: 2" in refused.lower()
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            held[0].settimeout(3)
            assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for connection in held:
                connection.close()


def test_head_is_answered_on_get_routes(server: Server) -> None:
    for path in ("/healthz", "/readyz", "/models", "/v2/health/ready"):
        response = server.client.head(server.base + path, headers=AUTH)
        assert response.status_code == 200, path
        assert response.content == b""


def test_readyz_without_a_key_shows_states_not_paths(server: Server) -> None:
    answer = server.client.get(server.base + "/readyz").json()
    assert answer["status"] == "ready"
    assert "/" not in str(answer["refused"])
