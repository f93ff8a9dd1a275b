"""One client's HTTP/2 connection carrying gRPC calls (RFC 9113; gRPC over HTTP/2).

Frames are read as they arrive (every complete frame of a read, then the answers of that
turn written in one go); each new stream is a call run by `calls.run_call` as a task. What a
hostile peer can make us hold or do is bounded before the work:

- bytes: a frame at most 16 KiB (our SETTINGS_MAX_FRAME_SIZE, the default), a header block at
  most 32 KiB compressed and 16 KiB decoded, a message at most `max_message` (RESOURCE_EXHAUSTED
  above, as grpcio answers); what a connection buffers is bounded by the flow-control window we
  grant it (`max_message` plus 1 MiB), given back only as calls consume their messages; a
  request stream's by its window (64 KiB) and MAX_WAITING_MESSAGES; a unary call's stream
  takes one message, its window given back as it comes up to the message limit; and what all
  of a worker's connections hold (messages arriving or waiting for their call) is charged to
  the worker's budget for request bodies, VAE_MAX_BODY_BUFFER_BYTES, which REST bodies share:
  a stream whose bytes would pass it ends RESOURCE_EXHAUSTED with the retry hint, so many
  connections each sending a large message slowly cannot add up to more than the budget;
- streams: at most MAX_STREAMS open per connection (REFUSED_STREAM above), the server's
  concurrent-call limit across connections (RESOURCE_EXHAUSTED above, as grpcio);
- time: the preface within PREFACE_S, a header block finished within PREFACE_S, a connection
  with nothing open closed after IDLE_S;
- churn: resets of calls in flight, SETTINGS and PING frames, and empty DATA frames, each at
  most a budget a 10 s window (ENHANCE_YOUR_CALM above: the rapid-reset and ping floods);
- sending: what we write waits for the peer's windows and for the socket to drain, so a peer
  that does not read holds one call's answer, not unbounded memory, and for at most
  VAE_GRPC_STREAM_IDLE_TIMEOUT_S: then the call ends DEADLINE_EXCEEDED and frees its slot.

A peer that breaks the protocol gets GOAWAY with the error's code and the connection closes;
a stream that does gets RST_STREAM, and the others go on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import struct
import time
from typing import TYPE_CHECKING

import grpc

from service.errors import Overloaded
from service.grpc.native import frames as f
from service.grpc.native.calls import CallAborted, Metadata
from service.grpc.native.headers import (
    MAX_HEADER_LIST_BYTES,
    OK_TRAILERS,
    RESPONSE_HEADERS,
    TABLE_BYTES,
    HeaderReader,
    trailers,
)
from service.grpc.status import grpc_status

if TYPE_CHECKING:
    from service.grpc.native.server import NativeServer

log = logging.getLogger("vae_service.grpc")

MAX_STREAMS = 100
MAX_HEADER_BLOCK_BYTES = 2 * MAX_HEADER_LIST_BYTES
PREFACE_S = 10.0
IDLE_S = 600.0
CREDIT_BYTES = 1 << 20  # consumed bytes given back in WINDOW_UPDATEs of at least this (or all)
FLOOD_WINDOW_S = 10.0
FLOOD_LIMITS = {"reset": 500, "settings": 100, "ping": 500, "empty": 1000}
MAX_MESSAGE_TEXT = 1024  # of a grpc-message we write
# Messages a request stream may have waiting: each costs a Python object, whatever its size
# (an empty message is 5 bytes of the window): 4,096 keep a stream's queue under ~0.5 MB.
MAX_WAITING_MESSAGES = 4096
# Headers a call's metadata does not carry (grpcio's invocation_metadata leaves them out too).
TRANSPORT_HEADERS = frozenset(
    {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
)
TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class Stream:
    """One call's stream: the messages the client sent, and our side's windows and state."""

    def __init__(
        self,
        connection: Connection,
        number: int,
        method: str,
        metadata: Metadata,
        deadline: float | None,
        compressed: bool,
    ) -> None:
        self.connection = connection
        self.number = number
        self.method = method
        self.metadata = metadata
        self.peer = connection.peer
        self.deadline = deadline
        self.compressed = compressed  # the client named an encoding other than identity
        # One request message (ModelInfer): its stream's window is given back as bytes come,
        # up to the message limit; a request stream's only as its messages are consumed.
        self.unary = connection.server.takes_one_message(method)
        self.messages: collections.deque[bytes] = collections.deque()
        self.partial = bytearray()
        self.arrived = asyncio.Event()
        self.remote_ended = False
        self.reset = False  # the client reset it, or the connection is gone
        self.finished = False  # our trailers are written
        self.headers_sent = False
        self.send_window = connection.peer_initial_window
        self.receive_window = connection.stream_window
        self.credit = 0  # consumed bytes not yet given back to the stream's window
        self.held = 0  # its bytes held here (partial and waiting): charged to the body budget
        self.task: asyncio.Task[None] | None = None
        self.waited_too_long = False
        self.had_message = False

    # --- calls.CallStream ------------------------------------------------------------------

    async def next_message(self) -> bytes | None:
        while not self.messages:
            if self.reset:
                raise asyncio.CancelledError
            if self.remote_ended:
                return None
            self.arrived.clear()
            # A client that opens a call and sends nothing more holds a slot: not forever. A
            # timer, not asyncio.wait_for, which would make a task for every wait.
            limit = self.connection.server.message_wait_s
            self.waited_too_long = False
            timer = self.connection.loop.call_later(limit, self._waited_too_long)
            try:
                await self.arrived.wait()
            finally:
                timer.cancel()
            if self.waited_too_long and not self.messages and not self.remote_ended:
                raise CallAborted(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no request message came for {limit:g} s (VAE_GRPC_STREAM_IDLE_TIMEOUT_S)",
                    (),
                )
        data = self.messages.popleft()
        self.connection.consumed(self, 5 + len(data), held=True)
        return data

    def _waited_too_long(self) -> None:
        self.waited_too_long = True
        self.arrived.set()

    async def send_message(self, data: bytes) -> None:
        await self.connection.send_message(self, data)

    def finish(self, code: int, message: str, metadata: Metadata) -> None:
        self.connection.finish(self, code, message, metadata)

    def cancelled(self) -> bool:
        return self.reset


class _Flood:
    """Events a sliding window allows: more is a flood."""

    def __init__(self) -> None:
        self.times: dict[str, collections.deque[float]] = {
            kind: collections.deque() for kind in FLOOD_LIMITS
        }

    def count(self, kind: str) -> None:
        now = time.monotonic()
        seen = self.times[kind]
        seen.append(now)
        while seen and seen[0] < now - FLOOD_WINDOW_S:
            seen.popleft()
        if len(seen) > FLOOD_LIMITS[kind]:
            raise f.ConnectionError_(
                f.ENHANCE_YOUR_CALM, f"more than {FLOOD_LIMITS[kind]} {kind} frames in 10 s"
            )


class Connection(asyncio.Protocol):
    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.buffer = bytearray()
        self.preface_seen = False
        self.headers = HeaderReader()
        self.block: tuple[int, int, bytearray, float] | None = None  # a header block being read
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.goaway_sent = False
        self.closed = False
        max_message = server.max_message
        self.stream_window = f.DEFAULT_WINDOW  # a request stream's: its messages wait in it
        self.connection_window = min(f.MAX_WINDOW, max_message + 5 + CREDIT_BYTES)
        self.receive_window = self.connection_window
        self.credit = 0
        self.send_window = f.DEFAULT_WINDOW
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_MAX_FRAME
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.writable = True  # False while the socket's buffer is above its high-water mark
        # Senders waiting for a window or the socket: woken when either opens, or the end.
        self.senders: set[asyncio.Future[None]] = set()
        self.flood = _Flood()
        self.last_activity = self.loop.time()
        self.opened = self.loop.time()
        self.watchdog: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are their own classes, with asyncio.Transport's methods.
        self.transport = transport  # type: ignore[assignment]
        address = transport.get_extra_info("peername")
        if isinstance(address, tuple) and len(address) >= 2:
            host, port = address[0], address[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
        if not self.server.admit(self):
            transport.close()
            self.closed = True
            return
        self.write(
            f.settings_frame(
                {
                    f.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                    f.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
                    f.HEADER_TABLE_SIZE: TABLE_BYTES,
                    f.ENABLE_PUSH: 0,
                }
            )
            + f.window_update(0, self.connection_window - f.DEFAULT_WINDOW)
        )
        self.watchdog = self.loop.call_later(PREFACE_S, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        for stream in list(self.streams.values()):
            self._drop(stream)
        self.writable = True
        self._wake_senders()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._wake_senders()

    def _wake_senders(self) -> None:
        for waiter in self.senders:
            if not waiter.done():
                waiter.set_result(None)
        self.senders.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
        self.buffer += data
        try:
            if not self.preface_seen:
                if len(self.buffer) < len(f.PREFACE):
                    if not f.PREFACE.startswith(bytes(self.buffer)):
                        raise f.ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                    return
                if bytes(self.buffer[: len(f.PREFACE)]) != f.PREFACE:
                    raise f.ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                del self.buffer[: len(f.PREFACE)]
                self.preface_seen = True
            self._read_frames()
        except f.ConnectionError_ as error:
            self.fail(error.code, error.message)
            return
        self._give_back_credit()
        self.flush()

    def _read_frames(self) -> None:
        view = memoryview(self.buffer)
        at = 0
        try:
            while len(view) - at >= f.HEADER_BYTES:
                length = int.from_bytes(view[at : at + 3], "big")
                if length > f.DEFAULT_MAX_FRAME:
                    raise f.ConnectionError_(
                        f.FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most 16384)"
                    )
                if len(view) - at < f.HEADER_BYTES + length:
                    break
                kind, flags = view[at + 3], view[at + 4]
                number = int.from_bytes(view[at + 5 : at + 9], "big") & 0x7FFFFFFF
                payload = bytes(view[at + 9 : at + 9 + length])
                at += f.HEADER_BYTES + length
                try:
                    self._frame(kind, flags, number, payload)
                except f.StreamError as error:
                    self._reset_stream(error.stream, error.code)
        finally:
            view.release()
            del self.buffer[:at]

    # --- frames in ---------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, number: int, payload: bytes) -> None:
        if self.block is not None and kind != f.CONTINUATION:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "a header block was left unfinished")
        if kind == f.DATA:
            self._data(flags, number, payload)
        elif kind == f.HEADERS:
            self._headers(flags, number, payload)
        elif kind == f.CONTINUATION:
            self._continuation(flags, number, payload)
        elif kind == f.RST_STREAM:
            self._rst_stream(number, payload)
        elif kind == f.SETTINGS:
            self._settings(flags, number, payload)
        elif kind == f.PING:
            self._ping(flags, number, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(number, payload)
        elif kind == f.GOAWAY:
            if number != 0:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "GOAWAY on a stream")
        elif kind == f.PRIORITY:
            if number == 0:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise f.StreamError(number, f.FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
        elif kind == f.PUSH_PROMISE:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "a client may not push")
        # other types are extensions: ignored (RFC 9113 5.5)

    @staticmethod
    def _unpadded(flags: int, payload: bytes) -> bytes:
        if not flags & f.PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, flags: int, number: int, payload: bytes) -> None:
        if number == 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        self.receive_window -= len(payload)
        if self.receive_window < 0:
            raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        if not payload and not flags & f.END_STREAM:
            self.flood.count("empty")
        stream = self.streams.get(number)
        if stream is None or stream.remote_ended:
            self.credit += len(payload)  # never held: given back at once
            if number > self.last_stream:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "DATA on an idle stream")
            if stream is None:
                return  # a call we ended (and reset) already: the rest of its bytes, ignored
            raise f.StreamError(number, f.STREAM_CLOSED, "DATA after the stream's end")
        stream.receive_window -= len(payload)
        if stream.receive_window < 0:
            raise f.StreamError(number, f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        data = self._unpadded(flags, payload)
        padding = len(payload) - len(data)
        if padding:
            self.consumed(stream, padding)
        budget = self.server.body_budget
        if budget is not None and data:
            try:
                budget.reserve(len(data))
            except Overloaded as refused:
                self.credit += len(data)  # never held
                status = grpc_status(refused)
                self.end_stream(stream, status.code, status.message, status.trailers)
                return
        stream.held += len(data)
        stream.partial += data
        if stream.unary and len(stream.partial) <= self.server.max_message + 5:
            stream.credit += len(data)  # the message's own bytes: bounded by its limit
            if stream.credit >= min(CREDIT_BYTES, self.stream_window // 2):
                stream.receive_window += stream.credit
                self.out.append(f.window_update(stream.number, stream.credit))
                stream.credit = 0
        self._messages(stream)
        if flags & f.END_STREAM:
            self._remote_end(stream)

    def _messages(self, stream: Stream) -> None:
        """The whole gRPC messages at the front of the stream's bytes (a 5-byte prefix: the
        compressed flag and the length, then the message)."""
        partial = stream.partial
        while len(partial) >= 5 and not stream.finished:
            length = int.from_bytes(partial[1:5], "big")
            if length > self.server.max_message:
                self.end_stream(
                    stream,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({length} vs. {self.server.max_message})",
                )
                return
            if partial[0] != 0:
                code = (
                    grpc.StatusCode.UNIMPLEMENTED if stream.compressed else grpc.StatusCode.INTERNAL
                )
                self.end_stream(stream, code, "compressed messages are not supported")
                return
            if len(partial) < 5 + length:
                return
            if stream.unary and (stream.messages or stream.had_message):
                self.end_stream(
                    stream, grpc.StatusCode.INTERNAL, "a unary call carried two messages"
                )
                return
            if len(stream.messages) >= MAX_WAITING_MESSAGES:
                self.end_stream(
                    stream,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"more than {MAX_WAITING_MESSAGES} request messages waiting on the stream",
                )
                return
            stream.messages.append(bytes(partial[5 : 5 + length]))
            stream.had_message = True
            del partial[: 5 + length]
            stream.arrived.set()

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_ended = True
        stream.arrived.set()
        if stream.partial and not stream.finished:
            self.end_stream(stream, grpc.StatusCode.INTERNAL, "the last message was cut short")

    def _headers(self, flags: int, number: int, payload: bytes) -> None:
        if number == 0 or number % 2 == 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, f"HEADERS on stream {number}")
        block = self._unpadded(flags, payload)
        if flags & f.PRIORITY_FLAG:
            block = block[5:]
        if flags & f.END_HEADERS:
            self._header_block(number, flags, block)
        else:
            self.block = (number, flags, bytearray(block), self.loop.time())

    def _continuation(self, flags: int, number: int, payload: bytes) -> None:
        if self.block is None or self.block[0] != number:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION out of place")
        first, first_flags, block, _ = self.block
        block += payload
        if len(block) > MAX_HEADER_BLOCK_BYTES:
            raise f.ConnectionError_(
                f.ENHANCE_YOUR_CALM, f"a header block above {MAX_HEADER_BLOCK_BYTES} bytes"
            )
        if flags & f.END_HEADERS:
            self.block = None
            self._header_block(first, first_flags, bytes(block))

    def _header_block(self, number: int, flags: int, block: bytes) -> None:
        headers = self.headers.read(block)  # always: the table must follow every block
        existing = self.streams.get(number)
        if number <= self.last_stream:
            if existing is None:
                return  # a call we ended already: its late trailers, ignored
            if existing.remote_ended or not flags & f.END_STREAM:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "HEADERS on a closed stream")
            self._remote_end(existing)  # the client's trailers: nothing in them for us
            return
        self.last_stream = number
        if self.goaway_sent:
            raise f.StreamError(number, f.REFUSED_STREAM, "the server is going away")
        if len(self.streams) >= MAX_STREAMS:
            raise f.StreamError(number, f.REFUSED_STREAM, "too many streams")
        stream = self._new_stream(number, headers)
        if stream is None:
            return
        self.streams[number] = stream
        if flags & f.END_STREAM:
            self._remote_end(stream)
        if not stream.finished:
            self.server.start_call(stream)

    def _new_stream(self, number: int, headers: tuple[tuple[bytes, bytes], ...]) -> Stream | None:
        method = content_type = b""
        post = False
        metadata: list[tuple[str, str | bytes]] = []
        deadline = None
        compressed = False
        for name, value in headers:
            if name.startswith(b":"):
                if name == b":path":
                    method = value
                elif name == b":method":
                    post = value == b"POST"
                continue
            if name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                deadline = self._deadline(value)
            elif name == b"grpc-encoding":
                compressed = value != b"identity"
            if name in TRANSPORT_HEADERS:
                continue
            key = name.decode("ascii", "replace")
            if key.endswith("-bin"):
                try:
                    metadata.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
                except (binascii.Error, ValueError):
                    continue  # undecodable binary metadata: left out
            else:
                metadata.append((key, value.decode("latin-1")))
        stream = Stream(
            self, number, method.decode("ascii", "replace"), tuple(metadata), deadline, compressed
        )
        problem = None
        if not post or not method.startswith(b"/"):
            problem = "a gRPC call is a POST to /service/method"
        elif not content_type.startswith(b"application/grpc"):
            problem = f"content-type {content_type.decode('latin-1')!r} is not application/grpc"
        if problem is not None:
            self.streams[number] = stream
            self.end_stream(stream, grpc.StatusCode.INTERNAL, problem)
            return None
        return stream

    def _deadline(self, value: bytes) -> float | None:
        if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1:] not in TIMEOUT_UNITS:
            return None  # malformed: as if absent
        return self.loop.time() + int(value[:-1]) * TIMEOUT_UNITS[value[-1:]]

    def _rst_stream(self, number: int, payload: bytes) -> None:
        if number == 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if number > self.last_stream:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        stream = self.streams.get(number)
        if stream is not None:
            if not stream.finished:
                self.flood.count("reset")  # a call made and cancelled: the rapid-reset attack
            self._drop(stream)

    def _settings(self, flags: int, number: int, payload: bytes) -> None:
        if number != 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        self.flood.count("settings")
        for at in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                self._wake_senders()
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.LARGEST_MAX_FRAME:
                    raise f.ConnectionError_(f.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "ENABLE_PUSH above 1")
        self.out.append(f.frame(f.SETTINGS, f.ACK, 0))

    def _ping(self, flags: int, number: int, payload: bytes) -> None:
        if number != 0:
            raise f.ConnectionError_(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "PING of the wrong size")
        if not flags & f.ACK:
            self.flood.count("ping")
            self.out.append(f.frame(f.PING, f.ACK, 0, payload))

    def _window_update(self, number: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if number == 0:
            if increment == 0:
                raise f.ConnectionError_(f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise f.ConnectionError_(f.FLOW_CONTROL_ERROR, "the window passed 2^31-1")
        else:
            stream = self.streams.get(number)
            if increment == 0:
                raise f.StreamError(number, f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            if stream is None:
                return  # a stream we finished: its late updates mean nothing
            stream.send_window += increment
            if stream.send_window > f.MAX_WINDOW:
                raise f.StreamError(number, f.FLOW_CONTROL_ERROR, "the window passed 2^31-1")
        self._wake_senders()

    # --- flow control of what we receive --------------------------------------------------

    def consumed(self, stream: Stream, size: int, held: bool = False) -> None:
        """`size` bytes of the stream's no longer held: the client may send as many again.
        `held`: bytes of a message its call took, charged to the body budget until now."""
        if held:
            stream.held -= size
            budget = self.server.body_budget
            if budget is not None:
                budget.release(size)
        self.credit += size
        if not stream.unary and not stream.remote_ended and not stream.finished:
            stream.credit += size
            if stream.credit >= min(CREDIT_BYTES, self.stream_window // 2):
                stream.receive_window += stream.credit
                self.out.append(f.window_update(stream.number, stream.credit))
                stream.credit = 0
        self._schedule_flush()

    def _give_back_credit(self) -> None:
        if self.credit and (self.credit >= CREDIT_BYTES or self.credit * 2 >= self.receive_window):
            self.receive_window += self.credit
            self.out.append(f.window_update(0, self.credit))
            self.credit = 0

    # --- frames out -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.out.append(data)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        self._give_back_credit()
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    async def send_message(self, stream: Stream, data: bytes) -> None:
        """A message of the call, within the peer's windows and its frame size."""
        if stream.finished or stream.reset:
            raise asyncio.CancelledError
        if not stream.headers_sent:
            stream.headers_sent = True
            self.out.append(f.frame(f.HEADERS, f.END_HEADERS, stream.number, RESPONSE_HEADERS))
        message = memoryview(struct.pack(">BI", 0, len(data)) + data)
        limit = self.server.message_wait_s
        while message:
            stalled = self.loop.time()
            while min(self.send_window, stream.send_window) <= 0 or not self.writable:
                # A client that does not read (no window, or a full socket) holds a call slot:
                # not for longer than it may wait for a message of its own.
                if self.loop.time() - stalled >= limit:
                    raise CallAborted(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the client read none of its answer for {limit:g} s",
                        (),
                    )
                self.flush()
                waiter: asyncio.Future[None] = self.loop.create_future()
                self.senders.add(waiter)
                timer = self.loop.call_later(limit, _wake, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self.senders.discard(waiter)
                if self.closed or stream.reset:
                    raise asyncio.CancelledError
            size = min(len(message), self.send_window, stream.send_window, self.peer_max_frame)
            self.out.append(f.frame(f.DATA, 0, stream.number, bytes(message[:size])))
            self.send_window -= size
            stream.send_window -= size
            message = message[size:]
        self._schedule_flush()

    def finish(self, stream: Stream, code: int, message: str, metadata: Metadata) -> None:
        """The call's end: its status and trailing metadata, then the stream is done."""
        if stream.finished or stream.reset or self.closed:
            self._forget(stream)
            return
        stream.finished = True
        if code == 0 and not metadata and stream.headers_sent:
            block = OK_TRAILERS
        else:
            text = message if len(message) <= MAX_MESSAGE_TEXT else message[:MAX_MESSAGE_TEXT]
            block = trailers(code, text, metadata, only=not stream.headers_sent)
        self.out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.number, block))
        if not stream.remote_ended:
            self.out.append(f.rst_stream(stream.number, f.NO_ERROR))  # the rest is not needed
        self._forget(stream)
        self._schedule_flush()

    def end_stream(
        self, stream: Stream, code: grpc.StatusCode, message: str, metadata: Metadata = ()
    ) -> None:
        """Ends a call from the transport's side (a message too large, a bad request): its
        status written, its handler (if running) cancelled."""
        task = stream.task
        self.finish(stream, code.value[0], message, metadata)
        stream.reset = True
        stream.arrived.set()
        if task is not None and not task.done():
            task.cancel()

    def _forget(self, stream: Stream) -> None:
        if self.streams.get(stream.number) is stream:
            del self.streams[stream.number]
            held, stream.held = stream.held, 0  # its partial message and those still waiting
            self.credit += held  # never to be consumed: the connection's window back
            if self.server.body_budget is not None:
                self.server.body_budget.release(held)
            stream.partial.clear()
            stream.messages.clear()
            self._wake_senders()
        if self.goaway_sent and not self.streams:
            self.close()

    def _drop(self, stream: Stream) -> None:
        """The client reset the stream, or the connection is gone: its call is cancelled."""
        stream.reset = True
        stream.arrived.set()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self._forget(stream)

    def _reset_stream(self, number: int, code: int) -> None:
        stream = self.streams.get(number)
        if stream is not None:
            self._drop(stream)
        self.out.append(f.rst_stream(number, code))

    # --- the connection's end ----------------------------------------------------------------

    def fail(self, code: int, message: str) -> None:
        log.info("gRPC connection from %s ended: %s", self.peer, message)
        self.out.append(f.goaway(self.last_stream, code, message.encode("utf-8", "replace")))
        self.flush()
        self.close()

    def go_away(self) -> None:
        """No new calls; the connection closes once the calls in flight are done."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.write(f.goaway(self.last_stream, f.NO_ERROR))
        if not self.streams:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.closed = True
            if self.writable:
                self.transport.close()
            else:  # the peer reads nothing: what is buffered would never drain
                self.transport.abort()

    def _watch(self) -> None:
        """Every PREFACE_S: a preface or header block that is late, or a long idle spell."""
        now = self.loop.time()
        if not self.preface_seen:
            self.fail(f.PROTOCOL_ERROR, f"no HTTP/2 preface within {PREFACE_S:g} s")
            return
        if self.block is not None and now - self.block[3] > PREFACE_S:
            self.fail(f.PROTOCOL_ERROR, f"a header block unfinished after {PREFACE_S:g} s")
            return
        if not self.streams and now - self.last_activity > IDLE_S:
            self.go_away()
            return
        if not self.closed:
            self.watchdog = self.loop.call_later(PREFACE_S, self._watch)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
