"""The native transport's server: what grpc.aio.Server offers the generated `add_*_to_server`
functions and grpcio's interceptors, on connections framed here (connection.py).

It listens with SO_REUSEPORT, as grpcio's server does, so every worker binds the same port and
the kernel spreads connections over them. Limits: VAE_MAX_CONNECTIONS connections (one more is
closed at once), VAE_GRPC_MAX_CONCURRENT_RPCS calls across them (one more is answered
RESOURCE_EXHAUSTED, as grpcio answers it). Stopping: no new connections, GOAWAY on each (no new
calls), the calls in flight given `grace_s` to finish, then cancelled.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from service.dataplane.body import BodyBudget
from service.grpc.native.calls import CallDetails, FindHandler, Handler, run_call
from service.grpc.native.connection import Connection, Stream

CONCURRENCY_LIMIT_MESSAGE = "Concurrent RPC limit exceeded!"  # grpcio's words for the same


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
        self.listener: asyncio.base_events.Server | None = None
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
        self.connections.discard(connection)

    def start_call(self, stream: Stream) -> None:
        if len(self.calls) >= self.max_calls:
            stream.finish(
                grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], CONCURRENCY_LIMIT_MESSAGE, ()
            )
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(run_call(stream, self.find_handler))
        stream.task = task
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)
        if stream.deadline is not None:  # the client's grpc-timeout, as grpcio keeps it
            timer = loop.call_at(stream.deadline, _expire, stream)
            task.add_done_callback(lambda _: timer.cancel())

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (the one asked, or the one the kernel gave for 0)."""
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(
            lambda: Connection(self), host.strip("[]"), port, reuse_port=True, backlog=1024
        )
        socket = self.listener.sockets[0]
        return int(socket.getsockname()[1])

    async def stop(self, grace_s: float) -> None:
        self.stopping = True
        if self.listener is not None:
            self.listener.close()
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
