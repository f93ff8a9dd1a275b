"""One gRPC call on the native transport: its handler found (through grpcio's interceptors, as
grpcio's server finds it), run with a context that offers what grpcio's servicer context offers
our servicers and grpcio's health and reflection servicers, and its end written as trailers.

A call's messages come from and go to its `CallStream` (connection.Stream): whole messages
in, already bounded in size; messages out, within the peer's flow-control windows.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc

log = logging.getLogger("vae_service.grpc")

Metadata = tuple[tuple[str, str | bytes], ...]


class CallStream(Protocol):
    method: str
    metadata: Metadata
    peer: str
    deadline: float | None  # loop time, from grpc-timeout

    async def next_message(self) -> bytes | None: ...  # None: the client sent its last
    async def send_message(self, data: bytes) -> None: ...
    def finish(self, code: int, message: str, metadata: Metadata) -> None: ...
    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class CallDetails(grpc.HandlerCallDetails):
    """What grpcio's interceptors read of a call: its method and metadata."""

    method: str
    invocation_metadata: Metadata


class CallAborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Metadata) -> None:
        super().__init__(details)
        self.code, self.details, self.trailers = code, details, trailers


class NativeContext:
    """The part of grpc.aio.ServicerContext that servicers use."""

    def __init__(self, stream: CallStream, serialize: Callable[[Any], bytes] | None) -> None:
        self._stream = stream
        self._serialize = serialize
        self._trailers: Metadata = ()
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> Metadata:
        return self._stream.metadata

    def peer(self) -> str:
        return self._stream.peer

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailers = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailers

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        raise CallAborted(code, details, tuple(trailing_metadata) or self._trailers)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    async def write(self, message: Any) -> None:
        assert self._serialize is not None
        await self._stream.send_message(self._serialize(message))

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        return None  # our answers' headers are constant; nothing of ours sends any

    def time_remaining(self) -> float | None:
        deadline = self._stream.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self._stream.cancelled()

    def done(self) -> bool:
        return self._stream.cancelled()

    def auth_context(self) -> dict[str, Any]:
        return {}


Handler = Any  # grpc.RpcMethodHandler: generic only in grpcio's type stubs
FindHandler = Callable[[CallDetails], Awaitable[Handler | None]]


async def run_call(stream: CallStream, find_handler: FindHandler) -> None:
    """The whole call; its end (a status, and any trailing metadata) always written."""
    code, message = grpc.StatusCode.OK, ""
    trailers: Metadata = ()
    context: NativeContext | None = None
    try:
        handler = await find_handler(CallDetails(stream.method, stream.metadata))
        if handler is None:
            code, message = grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {stream.method}"
        else:
            context = NativeContext(stream, handler.response_serializer)
            await _run(stream, handler, context)
            trailers = context.trailing_metadata()
            if context.code is not None:
                code, message = context.code, context.details
    except CallAborted as aborted:
        code, message, trailers = aborted.code, aborted.details, aborted.trailers
    except _BadMessage as bad:
        code, message = grpc.StatusCode.INTERNAL, str(bad)
    except asyncio.CancelledError:
        if not stream.cancelled():  # the server is stopping: say so, then end
            stream.finish(grpc.StatusCode.CANCELLED.value[0], "the server is stopping", ())
        raise
    except Exception:
        if context is not None and context.code not in (None, grpc.StatusCode.OK):
            # A handler that set its status, then raised: the protocol's methods we do not
            # offer answer UNIMPLEMENTED this way (the generated servicer's default).
            code, message, trailers = context.code, context.details, ()
        else:
            log.exception("unhandled error in gRPC call %s", stream.method)
            code, message, trailers = grpc.StatusCode.UNKNOWN, "Unexpected error", ()
    stream.finish(code.value[0], message, trailers)


class _BadMessage(Exception):
    pass


def _parse(deserialize: Callable[[bytes], Any] | None, data: bytes) -> Any:
    if deserialize is None:
        return data
    try:
        return deserialize(data)
    except Exception:  # protobuf's DecodeError and kin: the bytes are no such message
        raise _BadMessage("the request message could not be parsed") from None


async def _requests(stream: CallStream, handler: Handler) -> AsyncIterator[Any]:
    while (data := await stream.next_message()) is not None:
        yield _parse(handler.request_deserializer, data)


async def _single_request(stream: CallStream, handler: Handler) -> Any:
    data = await stream.next_message()
    if data is None:
        raise CallAborted(grpc.StatusCode.INTERNAL, "the call carried no request message", ())
    if await stream.next_message() is not None:
        raise CallAborted(grpc.StatusCode.INTERNAL, "a unary call carried two messages", ())
    return _parse(handler.request_deserializer, data)


async def _run(stream: CallStream, handler: Handler, context: NativeContext) -> None:
    serialize = handler.response_serializer or (lambda message: message)
    if handler.request_streaming:
        request: Any = _requests(stream, handler)
        method = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        request = await _single_request(stream, handler)
        method = handler.unary_stream if handler.response_streaming else handler.unary_unary
    result = method(request, context)
    if handler.response_streaming:
        if inspect.isawaitable(result):  # a handler that writes with context.write
            await result
            return
        if hasattr(result, "__aiter__"):
            async for response in result:
                await stream.send_message(serialize(response))
        else:
            for response in result:
                await stream.send_message(serialize(response))
        return
    if inspect.isawaitable(result):
        result = await result
    if context.code not in (None, grpc.StatusCode.OK):
        return  # set_code with an error: no message, only the status
    await stream.send_message(serialize(result))
