"""The hostile part of `make soak` (issue 18): bodies built to cost a worker as much as possible,
sent in the mix like every other kind, and slow or silent connections held open beside it.

`hostile_requests` are whole requests, each with the one 4xx it must get; they stay under the
soak's lowered body limit unless the point is to pass it. `ConnectionPressure` runs in a thread
during the load: it keeps connections that trickle a request head a byte at a time and
connections that send nothing, opens a new one for each the server cuts off, sends an oversized
head now and then, and times /healthz on a connection of its own throughout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.bodies import JSON


@dataclass(frozen=True)
class HostileRequest:
    key: str
    title: str
    status: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON})


def _png_bomb() -> bytes:
    """A PNG whose header claims 100,000 x 100,000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    header = (100_000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def hostile_requests(model: str, features: int) -> list[HostileRequest]:
    """The issue's findings and their relatives, against one model (digits: 64 features)."""
    ones = b"1," * (features - 1)
    v2 = f"/v2/models/{model}/infer"
    shape = b"[" + b",".join([b"99999999"] * 6000) + b"]"
    return [
        HostileRequest(
            "hostile-mixed-string",
            "36 kB string among numbers",
            422,
            "/reconstruct",
            b'{"inputs": [[' + b"1," * 500 + b'"' + b"x" * 36_000 + b'"]]}',
        ),
        HostileRequest(
            "hostile-v2-string",
            "v2 data: 36 kB string among numbers",
            400,
            v2,
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, %d], "data": [%s"%s"]}]}'
            % (features, ones, b"x" * 36_000),
        ),
        HostileRequest(
            "hostile-v2-axes",
            "v2 shape of 6,000 nine-digit axes",
            400,
            v2,
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": '
            + shape
            + b', "data": [1]}]}',
        ),
        HostileRequest(
            "hostile-empty-lists",
            "20,000 empty lists",
            413,
            "/reconstruct",
            b'{"inputs": [' + b"[]," * 19_999 + b"[]]}",
        ),
        HostileRequest(
            "hostile-true",
            "a true among 200 rows",
            422,
            "/encode",
            b'{"inputs": [' + (b"[" + ones + b"1],") * 100 + b"[" + ones + b"true]]}",
        ),
        HostileRequest(
            "hostile-deep",
            "nesting 20,000 deep",
            422,
            "/encode",
            b'{"inputs": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        ),
        HostileRequest(
            "hostile-strings",
            # Past the 64 KiB whole-parse size, so the string count is what refuses it.
            "8,000 keys (87 kB)",
            413,
            "/encode",
            b"{" + b",".join(b'"k%d": 1' % i for i in range(8000)) + b"}",
        ),
        HostileRequest("hostile-n", "n of a billion", 413, "/sample", b'{"n": 1000000000}'),
        HostileRequest(
            "hostile-n-list",
            "a 40 kB list as n",
            422,
            "/sample",
            b'{"n": [' + b"1," * 20_000 + b"1]}",
        ),
        HostileRequest(
            "hostile-content-type",
            "a 10 kB Content-Type",
            415,
            "/encode",
            b'{"inputs": [[1]]}',
            {"Content-Type": "text/" + "x" * 10_000},
        ),
        HostileRequest(
            "hostile-npy-shape",
            "npy header claiming a terabyte",
            400,
            "/encode",
            _npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2**38, 1024), }"),
            {"Content-Type": "application/x-npy"},
        ),
        HostileRequest(
            "hostile-png-bomb",
            "PNG of 10^10 pixels in 100 bytes",
            413,
            "/anomaly-score",
            _png_bomb(),
            {"Content-Type": "image/png"},
        ),
    ]


def _npy_header(header: str) -> bytes:
    text = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin-1")


# --- connections -------------------------------------------------------------------------------


@dataclass
class PressureCounts:
    opened: int = 0
    cut_off: int = 0  # closed by the server
    answers: dict[int, int] = field(default_factory=dict)  # status of what it said before closing
    oversized_heads: int = 0
    health_checks: int = 0
    health_failures: int = 0
    health_max_ms: float = 0.0
    still_open_too_long: int = 0  # held past the head timeout plus a second, at the end

    def to_dict(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "cut_off": self.cut_off,
            "answers": {str(k): v for k, v in sorted(self.answers.items())},
            "oversized_heads": self.oversized_heads,
            "health_checks": self.health_checks,
            "health_failures": self.health_failures,
            "health_max_ms": round(self.health_max_ms, 1),
            "still_open_too_long": self.still_open_too_long,
        }


class ConnectionPressure:
    """Slow and silent clients beside the load, for as long as it runs (module docstring)."""

    def __init__(
        self, base_url: str, *, trickling: int, silent: int, head_timeout_s: float
    ) -> None:
        parts = urlsplit(base_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.trickling = trickling
        self.silent = silent
        self.head_timeout_s = head_timeout_s
        self.counts = PressureCounts()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._hold, daemon=True),
            threading.Thread(target=self._health, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.counts.to_dict()

    def _connect(self) -> tuple[socket.socket, float] | None:
        try:
            connection = socket.create_connection(self.address, timeout=5)
        except OSError:
            return None
        connection.setblocking(False)
        self.counts.opened += 1
        return connection, time.monotonic()

    def _hold(self) -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        # connection, when opened, whether it trickles, bytes it has sent
        held: list[tuple[socket.socket, float, bool, int]] = []
        last_oversized = 0.0
        while not self._stop.is_set():
            while sum(t for _, _, t, _ in held) < self.trickling:
                opened = self._connect()
                if opened is None:
                    break
                held.append((*opened, True, 0))
            while sum(not t for _, _, t, _ in held) < self.silent:
                opened = self._connect()
                if opened is None:
                    break
                held.append((*opened, False, 0))
            kept = []
            for connection, opened_at, trickles, sent in held:
                if self._closed_by_server(connection):
                    connection.close()
                    continue
                if trickles:  # the head's first bytes, then a header value that never ends
                    with contextlib.suppress(OSError):
                        connection.send(head[sent : sent + 1] if sent < len(head) else b"a")
                kept.append((connection, opened_at, trickles, sent + 1))
            held = kept
            if time.monotonic() - last_oversized > 1.0:
                self._oversized_head()
                last_oversized = time.monotonic()
            time.sleep(0.25)
        now = time.monotonic()
        self.counts.still_open_too_long = sum(
            now - opened_at > self.head_timeout_s + 1.0 and not self._closed_by_server(c)
            for c, opened_at, _, _ in held
        )
        for connection, _, _, _ in held:
            connection.close()

    def _closed_by_server(self, connection: socket.socket) -> bool:
        try:
            data = connection.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            self.counts.cut_off += 1
            return True
        if data.startswith(b"HTTP/1.1 ") and data[9:12].isdigit():
            status = int(data[9:12])
            self.counts.answers[status] = self.counts.answers.get(status, 0) + 1
        if data == b"" or data.startswith(b"HTTP/1.1 "):
            self.counts.cut_off += 1
            return True
        return False

    def _oversized_head(self) -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65_536 + b"\r\n\r\n"
        with contextlib.suppress(OSError), socket.create_connection(self.address, 5) as c:
            c.sendall(request)
            answer = c.recv(4096)
            if answer[9:12].isdigit():
                status = int(answer[9:12])
                self.counts.answers[status] = self.counts.answers.get(status, 0) + 1
        self.counts.oversized_heads += 1

    def _health(self) -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        connection: socket.socket | None = None
        while not self._stop.is_set():
            began = time.perf_counter()
            ok = False
            for _ in range(2):  # a keep-alive connection the server closed: once more, anew
                try:
                    if connection is None:
                        connection = socket.create_connection(self.address, timeout=5)
                    connection.sendall(request)
                    answer = connection.recv(4096)
                except OSError:
                    answer = b""
                if answer:
                    ok = answer.startswith(b"HTTP/1.1 200")
                    break
                if connection is not None:
                    connection.close()
                connection = None
            elapsed_ms = (time.perf_counter() - began) * 1000
            self.counts.health_checks += 1
            if ok:
                self.counts.health_max_ms = max(self.counts.health_max_ms, elapsed_ms)
            else:
                self.counts.health_failures += 1
            time.sleep(0.1)
        if connection is not None:
            connection.close()
