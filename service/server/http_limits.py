"""Limits on HTTP connections, enforced in uvicorn's httptools protocol before the app sees a
request: what slow, silent or oversized clients cost a worker is bounded here.

- **Head size and count** (VAE_MAX_HEADER_BYTES, VAE_MAX_HEADERS): httptools gathers a header
  value whole before it calls back, however long it is, so the bytes of a request head (URL
  included) are counted as they arrive and the parser is fed no more than the limit: a longer
  head is answered 431 having cost at most the limit. The header lines are counted once the
  head is complete.
- **Head timeout** (VAE_HEADER_TIMEOUT_S): a connection that opens and sends nothing, or sends
  its request line and headers a byte at a time, is answered 408 and closed when the timeout
  passes. It runs from the connection's opening and from the first byte of each request; the
  idle time between keep-alive requests is uvicorn's keep-alive timeout
  (VAE_KEEP_ALIVE_TIMEOUT_S).
- **Body timeout** (VAE_REQUEST_TIMEOUT_S, the request's deadline): a body still arriving that
  long after its head is answered 408 here and closed; the app, waiting for it, sees the
  request end. (An asyncio timeout around the app's read cost 6 us a request:
  bench/HOSTILE.md.)
- Both timeouts are checked by one sweep per worker every `SWEEP_S`, not by timers armed and
  cancelled for every request, so each fires up to half a second after its limit.
- **Connection cap** (VAE_MAX_CONNECTIONS, per worker): one more connection is answered 503
  with Retry-After and closed at once, so file descriptors and per-connection memory stay
  bounded while the connections already open are served.
- **Unread bodies**: an answer sent before its request's body has all arrived closes the
  connection, so a body trickled after the answer cannot hold it open. Every such close, and
  every refusal above, lingers: the answer goes out, then the write side is shut (FIN) and what
  the client still sends is read and dropped for up to `LINGER_S` or `LINGER_MAX_BYTES`, so the
  close does not reset a connection whose answer the client has not read yet: a close with
  unread bytes makes the kernel send RST, which can discard the answer still in the send
  buffer or, on some clients, the one already received (RFC 9112, section 9.6, "the TCP reset
  problem"). Over loopback the answer survived an immediate close as well
  (tests/e2e/test_hostile_clients.py reads it either way); across a network it need not.

The body's size is bounded by the app (service.dataplane.body: its route's limit and the worker's
budget).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from service.observability.metrics import connection_refused
from service.server.one_write import OneWriteHttpToolsProtocol
from service.settings import ServiceSettings

log = logging.getLogger("vae_service")

# A refused client may still be sending; its bytes are read and dropped this long, at most this
# many, before the connection closes (nginx lingers similarly: lingering_time, lingering_timeout).
LINGER_S = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    max_connections: int
    retry_after_s: int
    body_timeout_s: float | None  # the request's deadline, which covers reading its body

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ConnectionLimits:
        return cls(
            settings.max_header_bytes,
            settings.max_headers,
            settings.header_timeout_s,
            settings.max_connections,
            settings.retry_after_s,
            settings.request_timeout_s or None,
        )


# Each worker builds its limits from the same environment as its app (service.server.cli), once.
_limits: ConnectionLimits | None = None


def worker_limits() -> ConnectionLimits:
    global _limits
    if _limits is None:
        _limits = ConnectionLimits.from_settings(ServiceSettings())
    return _limits


class LimitedHttpToolsProtocol(OneWriteHttpToolsProtocol):
    """uvicorn's httptools protocol (with one-write answers) under `ConnectionLimits`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = worker_limits()
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._heads = 0  # request heads parsed on this connection
        # Event-loop times the sweep (`_Sweep`) reads: when the request head now arriving
        # began (None between requests: idle keep-alive is uvicorn's timeout), and when the
        # head of the request whose body may still be arriving ended.
        self._head_since: float | None = None
        self._body_since = 0.0
        # Once refused, the connection is answered and closing: the parser's callbacks for
        # bytes already fed to it do nothing (raising in one would make uvicorn answer 400).
        self._refused = False
        self._lingering: int | None = None  # bytes dropped since the answer, when lingering
        # A refusal of a pipelined request's head waits for the earlier request's answer.
        self._refusal_waiting: bytes | None = None

    # --- the connection ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too_many_connections",
                f"this worker has {self.limits.max_connections} connections open "
                "(VAE_MAX_CONNECTIONS); retry later",
                retry_after=True,
            )
            return
        self._head_since = self.loop.time()  # a connection that never sends a byte
        _sweep_for(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_since = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The common case first: this runs for every read of every request.
        if self._refused or self._lingering is not None:
            self._after_answer(data)
            return
        if self._in_head:
            if self._head_since is None:  # the first byte of a request head
                self._head_since = self.loop.time()
            head_bytes = self._head_bytes + len(data)
            if head_bytes > self.limits.max_header_bytes:
                self._past_head_limit(data)
                return
            self._head_bytes = head_bytes
        super().data_received(data)

    def _after_answer(self, data: bytes) -> None:
        if self._lingering is not None:
            self._lingering += len(data)
            if self._lingering > LINGER_MAX_BYTES:
                self.transport.close()
        # Refused: nothing more is read.

    def _past_head_limit(self, data: bytes) -> None:
        """Feed only what the head limit allows; a head that has not ended within it is too
        long, whatever follows."""
        room = self.limits.max_header_bytes - self._head_bytes
        heads = self._heads
        self._head_bytes += room
        super().data_received(data[:room])
        if self._refused or self.transport.is_closing():
            return
        if self._heads == heads:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
                "the request line and headers are longer than "
                f"{self.limits.max_header_bytes} bytes (VAE_MAX_HEADER_BYTES)",
            )
            return
        # The head ended inside the limit: the rest is its body, or the next request.
        self.data_received(data[room:])

    # --- parser callbacks ---

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        # Counted here, once, rather than in a callback per header: the head's byte limit
        # already bounds how many can have come (16 KiB: a few thousand at most).
        if len(self.headers) > self.limits.max_headers:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
                f"the request has more than {self.limits.max_headers} headers (VAE_MAX_HEADERS)",
            )
            return
        self._in_head = False
        self._heads += 1
        self._head_since = None
        self._body_since = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_head = True  # the next bytes are the next request's
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        refusal = self._refusal_waiting
        if refusal is not None:
            self._refusal_waiting = None
            self._send_refusal(refusal)
            return
        if self._body_unread() and not self.transport.is_closing():
            # Answered before its body had all arrived: the rest would hold the connection.
            self._linger()

    def close_after_answer(self) -> None:
        if self._body_unread():
            self._linger()
        else:
            super().close_after_answer()

    def _body_unread(self) -> bool:
        cycle = self.cycle  # the answered one, unless a pipelined request is already parsed
        return cycle is not None and cycle.response_complete and cycle.more_body

    def _linger(self) -> None:
        """Shut the write side after the answer and drop what still comes, for a while."""
        if self._lingering is not None or self.transport.is_closing():
            return
        self._lingering = 0
        self._head_since = None
        self.loop.call_later(LINGER_S, self.transport.close)
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            self.transport.close()

    # --- helpers ---

    def check_deadlines(self, now: float) -> None:
        """Cut the connection off if its request head, or its request's body, is late (called
        by the worker's sweep)."""
        if self._refused or self._lingering is not None or self.transport.is_closing():
            return
        head_since = self._head_since
        if self._in_head and head_since is not None:
            if now - head_since > self.limits.header_timeout_s:
                self._refuse(
                    HTTPStatus.REQUEST_TIMEOUT,
                    "head_timeout",
                    f"no complete request head within {self.limits.header_timeout_s:g} s "
                    "(VAE_HEADER_TIMEOUT_S)",
                )
            return
        timeout = self.limits.body_timeout_s
        cycle = self.cycle
        if (
            timeout is not None
            and cycle is not None
            and cycle.more_body
            and now - self._body_since > timeout
        ):
            self._body_timed_out(cycle)

    def _body_timed_out(self, cycle: Any) -> None:
        """The request's body did not all arrive in time: answer 408 and close, unless the app
        has answered already; either way the app, waiting for the body, sees the request end
        (uvicorn then drops whatever it answers)."""
        answered = cycle.response_started
        cycle.disconnected = True
        cycle.message_event.set()
        if answered:
            self._linger()
        else:
            self._refuse(
                HTTPStatus.REQUEST_TIMEOUT,
                "body_timeout",
                f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                "(VAE_REQUEST_TIMEOUT_S)",
            )

    def _refuse(self, status: int, reason: str, message: str, *, retry_after: bool = False) -> None:
        """Answer with the service's error body and close: nothing more is read."""
        self._refused = True
        self._head_since = None
        connection_refused(reason)  # no ASGI middleware sees these: counted here
        log.debug("connection refused (%s): %s", reason, message)
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": {"code": reason, "message": message, "detail": None}})
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if retry_after:
            head.append(f"retry-after: {self.limits.retry_after_s}")
        answer = "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body
        earlier = self.cycle
        if self._in_head and earlier is not None and not earlier.response_complete:
            # The refused head is a pipelined request's, and the one before it is still being
            # answered: answers go out in the order of their requests (RFC 9112, 9.3.2), so
            # this one follows that answer (on_response_complete).
            self._refusal_waiting = answer
            return
        self._send_refusal(answer)

    def _send_refusal(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self._linger()


# One sweep per worker, twice a second, in place of two timers armed and cancelled for every
# request; a sweep costs well under a microsecond per open connection.
SWEEP_S = 0.5


class _Sweep:
    """Checks every connection of a worker against its deadlines (`check_deadlines`), so a
    timeout fires between its limit and its limit plus SWEEP_S."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.loop.call_later(SWEEP_S, self.run)

    def run(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, LimitedHttpToolsProtocol):
                connection.check_deadlines(now)
        self.loop.call_later(SWEEP_S, self.run)


_sweeps: dict[int, _Sweep] = {}  # by the id of the server's connection set: one per worker


def _sweep_for(protocol: LimitedHttpToolsProtocol) -> None:
    connections = protocol.connections
    if id(connections) not in _sweeps:
        _sweeps[id(connections)] = _Sweep(protocol.loop, connections)
