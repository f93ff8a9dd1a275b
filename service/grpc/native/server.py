"""The native transport's server: what grpc.aio.Server offers the generated `add_*_to_server`
functions and grpcio's interceptors, on connections framed here (connection.py).

It listens with SO_REUSEPORT, as grpcio's server does, so every worker binds the same port and
the kernel spreads connections over them; with a Placement (placement.py) a worker that holds
more connections than a sibling passes a new one on, so a few long-lived gRPC connections do not
land on one core. It accepts connections itself (not asyncio's create_server) for that: the
socket is handed over before anything is read from it.

Limits: VAE_MAX_CONNECTIONS connections (one more is closed at once),
VAE_GRPC_MAX_CONCURRENT_RPCS calls across them (one more is answered RESOURCE_EXHAUSTED, as
grpcio answers it). Stopping: no new connections, GOAWAY on each (no new
calls), the calls in flight given `grace_s` to finish, then cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from service.dataplane.body import BodyBudget
from service.grpc.native.calls import CallDetails, FindHandler, Handler, run_call
from service.grpc.native.connection import Connection, Stream
from service.grpc.native.placement import Placement

log = logging.getLogger("vae_service.grpc")

CONCURRENCY_LIMIT_MESSAGE = "Concurrent RPC limit exceeded!"  # grpcio's words for the same
ACCEPT_PER_WAKE = 64  # connections accepted per wake-up of a listening socket
ACCEPT_PAUSE_S = 1.0  # out of file descriptors: stop accepting this long (asyncio's own pause)


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for `host` (every address it names) and `port`."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in found:
            if port == 0 and sockets:  # every address on the port the kernel gave the first
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            listener = socket.socket(family, kind, protocol)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and len(found) > 1:
                # "::" and "0.0.0.0" both asked for: each socket its own family (as asyncio).
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(1024)
            listener.setblocking(False)
    except OSError:
        for listener in sockets:
            listener.close()
        raise
    return sockets


def _expire(stream: Stream) -> None:
    if stream.task is not None and not stream.task.done():
        stream.connection.end_stream(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class NativeServer:
    def __init__(
        self,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        max_message: int,
        max_calls: int,
        max_connections: int,
        message_wait_s: float,
        body_budget: BodyBudget | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.interceptors = list(interceptors)
        # The worker's budget for request bodies (REST's too): what connections hold of
        # messages counts toward it (service.grpc.native.connection).
        self.body_budget = body_budget
        self.message_wait_s = message_wait_s  # the longest wait for a call's next message
        self.max_message = max_message
        self.max_calls = max_calls
        self.max_connections = max_connections
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, Handler] = {}
        self.connections: set[Connection] = set()
        self.calls: set[asyncio.Task[None]] = set()
        self.connecting: set[asyncio.Task[None]] = set()  # accepted, transport not yet made
        self.listeners: list[socket.socket] = []
        self.placement = placement
        # Connections this worker took and has not seen end: what siblings read of its load.
        # Counted when accepted, before the connection is made, so a burst accepted in one
        # wake-up is spread as it is accepted.
        self.held = 0
        self.stopping = False
        self.find_handler: FindHandler = self._chain()

    # --- what the generated add_*_to_server functions call -----------------------------------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.registered[f"/{service}/{name}"] = handler

    def takes_one_message(self, method: str) -> bool:
        """Whether a call of `method` sends one request message (unary or server-streaming):
        known for the registered methods, else assumed a stream (the stricter window)."""
        handler = self.registered.get(method)
        return handler is not None and not handler.request_streaming

    # --- handlers, through the interceptors -------------------------------------------------

    async def _lookup(self, details: CallDetails) -> Handler | None:
        found = self.registered.get(details.method)
        if found is not None:
            return found
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    def _chain(self) -> FindHandler:
        """Each interceptor wraps the lookup, the first listed outermost (as grpcio)."""
        find: Any = self._lookup
        for interceptor in reversed(self.interceptors):
            find = functools.partial(interceptor.intercept_service, find)
        return find  # type: ignore[no-any-return]

    # --- connections and calls ----------------------------------------------------------------

    def admit(self, connection: Connection) -> bool:
        if self.stopping or len(self.connections) >= self.max_connections:
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: Connection) -> None:
        """Called once for every connection made (connection_lost), admitted or not."""
        self.connections.discard(connection)
        self._held(-1)

    def _held(self, change: int) -> None:
        self.held += change
        if self.placement is not None:
            self.placement.hold(self.held)

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_PER_WAKE):
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and its kin: the backlog waits
                log.warning("gRPC: accepting a connection failed (%s); pausing accepts", error)
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_PAUSE_S, self._listen, listener)
                return
            placement = self.placement
            if placement is not None and not self.stopping:
                sibling = placement.elsewhere()
                if sibling is not None and placement.hand_over(connection, sibling):
                    connection.close()  # the sibling holds its own descriptor of it
                    continue
            self._take(connection)

    def _take_handed(self) -> None:
        assert self.placement is not None
        connections, messages = self.placement.receive()
        for connection in connections:
            self._take(connection)
        self.placement.took(messages)

    def _take(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        with contextlib.suppress(OSError):  # a client already gone fails at the transport
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._held(+1)
        task = asyncio.get_running_loop().create_task(self._connect(connection))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: Connection(self), connection)
        except OSError:  # the client left before its transport was made
            connection.close()
            self._held(-1)

    def _listen(self, listener: socket.socket) -> None:
        if not self.stopping and listener.fileno() >= 0:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    def start_call(self, stream: Stream) -> None:
        if len(self.calls) >= self.max_calls:
            stream.finish(
                grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], CONCURRENCY_LIMIT_MESSAGE, ()
            )
            return
        loop = stream.connection.loop  # asking asyncio costs a getpid() a call (Python 3.11)
        task = loop.create_task(run_call(stream, self.find_handler))
        stream.task = task
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)
        if stream.deadline is not None:  # the client's grpc-timeout, as grpcio keeps it
            timer = loop.call_at(stream.deadline, _expire, stream)
            task.add_done_callback(lambda _: timer.cancel())

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (the one asked, or the one the kernel gave for 0)."""
        self.listeners = _listening_sockets(host.strip("[]"), port)
        for listener in self.listeners:
            self._listen(listener)
        if self.placement is not None:
            asyncio.get_running_loop().add_reader(
                self.placement.mailbox.fileno(), self._take_handed
            )
        return int(self.listeners[0].getsockname()[1])

    def _stop_listening(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            loop.remove_reader(listener.fileno())
            listener.close()
        self.listeners = []
        if self.placement is not None:
            loop.remove_reader(self.placement.mailbox.fileno())
            # Sockets already on their way here meet a worker that takes no new connection.
            connections, _ = self.placement.receive()
            for connection in connections:
                connection.close()
            self.placement.leave()
            self.placement = None

    async def stop(self, grace_s: float) -> None:
        self.stopping = True
        self._stop_listening()
        for connection in list(self.connections):
            connection.go_away()
        if self.calls:
            await asyncio.wait(set(self.calls), timeout=grace_s)
        for task in list(self.calls):
            task.cancel()
        if self.calls:
            await asyncio.wait(set(self.calls), timeout=1.0)
        for connection in list(self.connections):
            connection.close()
