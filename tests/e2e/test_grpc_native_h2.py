"""The native gRPC transport (VAE_GRPC_SERVER=native) against a hostile HTTP/2 peer, on a real
`vae-serve`: raw sockets, frames made here, header blocks by the hpack library. Each attack
ends the attacker's connection (GOAWAY with the right code) or its stream (RST_STREAM or a
gRPC status), and the worker goes on answering everyone else."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from hpack import Decoder, Encoder
from sklearn.datasets import load_digits

from service.grpc import inference_pb2 as pb
from service.grpc.native import frames as f
from tests.bundles import committed_repository
from tests.e2e.processes import free_port, serve, terminate, wait_ready

MODEL = "digits-vae"
INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
MAX_BODY = 65_536  # VAE_MAX_BODY_BYTES here: the message limit, and our window's size
BODY_BUDGET = 150_000  # VAE_MAX_BODY_BUFFER_BYTES here: two messages of 60,000 bytes fit, not 3


@contextmanager
def native_server(**env: str) -> Iterator[tuple[str, str]]:
    """A one-worker vae-serve with gRPC on the native transport and MAX_BODY as its message
    limit: (its REST base URL, its gRPC target)."""
    port, grpc_port = free_port(), free_port()
    process = serve(
        "--model-repository",
        str(committed_repository()),
        "--port",
        str(port),
        env={
            "VAE_WORKERS": "1",
            "VAE_GRPC_SERVER": "native",
            "VAE_GRPC_PORT": str(grpc_port),
            "VAE_MAX_BODY_BYTES": str(MAX_BODY),
            "VAE_LOG_LEVEL": "warning",
            **env,
        },
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    finally:
        terminate(process)


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    with native_server(VAE_GRPC_STREAM_IDLE_TIMEOUT_S="1") as (_, grpc_target):
        yield grpc_target


@pytest.fixture(scope="module")
def small_budget_target() -> Iterator[tuple[str, str]]:
    """A server whose body budget (VAE_MAX_BODY_BUFFER_BYTES) holds two 60,000-byte parts of
    messages, not three (the other tests' budget is larger than a connection's window, so
    that the window's own defence is what they meet)."""
    with native_server(VAE_MAX_BODY_BUFFER_BYTES=str(BODY_BUDGET)) as targets:
        yield targets


class Peer:
    """A raw HTTP/2 client: frames out as asked, frames in as they come."""

    def __init__(self, target: str, preface: bool = True) -> None:
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.buffer = b""
        if preface:
            self.sock.sendall(f.PREFACE + f.settings_frame({}))

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def headers(
        self,
        stream: int,
        path: str = INFER,
        end_stream: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "test"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *extra,
            ]
        )
        flags = f.END_HEADERS | (f.END_STREAM if end_stream else 0)
        return f.frame(f.HEADERS, flags, stream, block)

    def frames(self, seconds: float = 5.0) -> Iterator[tuple[int, int, int, bytes]]:
        """Frames until the connection closes or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + length:
                    break
                kind, flags = self.buffer[3], self.buffer[4]
                stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
                payload = self.buffer[9 : 9 + length]
                self.buffer = self.buffer[9 + length :]
                yield kind, flags, stream, payload
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65_536)
            except (TimeoutError, ConnectionResetError):
                return
            if not data:
                return
            self.buffer += data

    def goaway(self, seconds: float = 5.0) -> int | None:
        """The error code of the GOAWAY the server sends, None if none came."""
        for kind, _, _, payload in self.frames(seconds):
            if kind == f.GOAWAY:
                return int(struct.unpack(">II", payload[:8])[1])
        return None

    def answer(self, stream: int, seconds: float = 5.0) -> dict[str, Any]:
        """What came back on a stream: its headers and trailers, its RST_STREAM code."""
        seen: dict[str, Any] = {"headers": {}, "reset": None, "data": b""}
        for kind, flags, number, payload in self.frames(seconds):
            if number != stream:
                continue
            if kind == f.HEADERS:
                seen["headers"].update(dict(self.decoder.decode(payload)))
                if flags & f.END_STREAM:
                    return seen
            elif kind == f.DATA:
                seen["data"] += payload
            elif kind == f.RST_STREAM:
                seen["reset"] = int.from_bytes(payload, "big")
                return seen
        return seen

    def close(self) -> None:
        self.sock.close()


def message(data: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(data)) + data


def ended_with(seen: dict[str, Any], status: str, words: str) -> None:
    """The stream's call ended with this grpc-status and a grpc-message saying `words`."""
    assert seen["headers"].get("grpc-status") == status, seen
    assert words in seen["headers"].get("grpc-message", ""), seen


def still_serves(target: str) -> None:
    """A well-behaved caller after the attack: a whole, right answer."""
    x = load_digits().data[:1].astype(np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = triton.InferenceServerClient(target).infer(MODEL, [tensor])
    assert result.as_numpy("anomaly_score").shape == (1,)


def infer_message() -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(load_digits().data[:1].astype(np.float32).tobytes())
    return message(request.SerializeToString())


def test_a_call_made_by_hand_is_answered(target: str) -> None:
    """The raw peer itself is right: one call, its answer and grpc-status 0."""
    peer = Peer(target)
    peer.send(peer.headers(1), f.frame(f.DATA, f.END_STREAM, 1, infer_message()))
    seen = peer.answer(1)
    assert seen["headers"].get("grpc-status") == "0", seen
    reply = pb.ModelInferResponse.FromString(seen["data"][5:])
    assert reply.model_name == MODEL
    peer.close()


@pytest.mark.parametrize(
    ("attack", "code"),
    [
        ("not http/2", f.PROTOCOL_ERROR),
        ("a frame above 16 KiB", f.FRAME_SIZE_ERROR),
        ("a header block that never ends", f.ENHANCE_YOUR_CALM),
        ("a header block that is no HPACK", f.COMPRESSION_ERROR),
        ("streams opened and reset at once", f.ENHANCE_YOUR_CALM),
        ("a ping flood", f.ENHANCE_YOUR_CALM),
        ("a settings flood", f.ENHANCE_YOUR_CALM),
        ("a window grown past 2^31-1", f.FLOW_CONTROL_ERROR),
        ("data beyond the window", f.FLOW_CONTROL_ERROR),
        ("a push from the client", f.PROTOCOL_ERROR),
        ("data on a stream never opened", f.PROTOCOL_ERROR),
    ],
)
def test_an_attack_on_the_connection_ends_it_and_no_one_else(
    target: str, attack: str, code: int
) -> None:
    peer = Peer(target, preface=attack != "not http/2")
    if attack == "not http/2":
        peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    elif attack == "a frame above 16 KiB":
        peer.send(f.frame(f.DATA, 0, 1, b"x" * 16_385))
    elif attack == "a header block that never ends":
        peer.send(f.frame(f.HEADERS, 0, 1, b"\x82"))
        peer.send(*(f.frame(f.CONTINUATION, 0, 1, b"\x82" * 16_000) for _ in range(4)))
    elif attack == "a header block that is no HPACK":
        peer.send(f.frame(f.HEADERS, f.END_HEADERS, 1, b"\xff\xff\xff\xff\xff"))
    elif attack == "streams opened and reset at once":
        for stream in range(1, 2 * 600, 2):
            peer.send(peer.headers(stream), f.rst_stream(stream, f.CANCEL))
    elif attack == "a ping flood":
        peer.send(*(f.frame(f.PING, 0, 0, b"12345678") for _ in range(600)))
    elif attack == "a settings flood":
        peer.send(*(f.settings_frame({}) for _ in range(150)))
    elif attack == "a window grown past 2^31-1":
        peer.send(f.window_update(0, 2**31 - 1), f.window_update(0, 2**31 - 1))
    elif attack == "data beyond the window":
        # Request streams, each filling its own window (64 KiB) with the start of a message
        # that never ends: together past the connection's (the message limit and 1 MiB).
        start = b"\x00" + struct.pack(">I", MAX_BODY) + b"\x00" * (16_384 - 5)
        for stream in range(1, 2 * 20, 2):
            peer.send(peer.headers(stream, STREAM))
            peer.send(
                *(
                    f.frame(f.DATA, 0, stream, start if i == 0 else b"\x00" * 16_384)
                    for i in range(3)
                )
            )
            peer.send(f.frame(f.DATA, 0, stream, b"\x00" * 16_383))
    elif attack == "a push from the client":
        peer.send(f.frame(f.PUSH_PROMISE, f.END_HEADERS, 1, b"\x00\x00\x00\x02\x82"))
    elif attack == "data on a stream never opened":
        peer.send(f.frame(f.DATA, 0, 7, b"hello"))
    assert peer.goaway() == code, attack
    peer.close()
    still_serves(target)


def test_a_lying_message_length_is_refused_before_its_bytes_come(target: str) -> None:
    peer = Peer(target)
    peer.send(peer.headers(1), f.frame(f.DATA, 0, 1, b"\x00" + struct.pack(">I", 2**31)))
    ended_with(peer.answer(1), "8", "larger than max")  # RESOURCE_EXHAUSTED
    peer.close()
    still_serves(target)


def _part_of_a_large_message(peer: Peer, stream: int, size: int = 60_000) -> None:
    """A call that declares a message of MAX_BODY - 100 bytes and sends `size` of them, in
    frames of 15,000 (under the 16 KiB frame limit and the stream's first 64 KiB window)."""
    head = b"\x00" + struct.pack(">I", MAX_BODY - 100)
    data = (head + bytes(size))[:size]
    peer.send(
        peer.headers(stream),
        *(f.frame(f.DATA, 0, stream, data[i : i + 15_000]) for i in range(0, size, 15_000)),
    )


def test_messages_held_across_connections_share_the_workers_body_budget(
    small_budget_target: tuple[str, str],
) -> None:
    """Slow uploads on many connections: what the connections hold of unfinished messages
    counts toward VAE_MAX_BODY_BUFFER_BYTES, which REST bodies share, so the third
    60,000-byte part past a 150,000-byte budget ends its call RESOURCE_EXHAUSTED with the retry
    hint, a REST body that does not fit beside them is answered 503, and the bytes are given
    back when the connections go."""
    base_url, target = small_budget_target
    first, second = Peer(target), Peer(target)
    _part_of_a_large_message(first, 1)
    _part_of_a_large_message(second, 1)
    assert second.answer(1, seconds=1)["headers"] == {}  # held, not refused
    third = Peer(target)
    _part_of_a_large_message(third, 1)
    seen = third.answer(1)
    ended_with(seen, "8", "VAE_MAX_BODY_BUFFER_BYTES")  # RESOURCE_EXHAUSTED
    assert seen["headers"].get("grpc-retry-pushback-ms") == "1000"
    body = json.dumps({"inputs": (load_digits().data[:110] + 0.25).tolist()}).encode()
    assert 30_000 < len(body) < MAX_BODY  # more than the 30,000 bytes left, a body that fits
    headers = {"Content-Type": "application/json"}
    answer = httpx.post(f"{base_url}/anomaly-score", content=body, headers=headers, timeout=10)
    assert answer.status_code == 503, answer.text
    assert "VAE_MAX_BODY_BUFFER_BYTES" in answer.json()["error"]["message"]
    still_serves(target)  # a small message still fits beside the two held
    for peer in (first, second, third):
        peer.close()
    # Given back: two more parts are held again, where a leak would refuse the second.
    time.sleep(0.3)
    again = [Peer(target), Peer(target)]
    for peer in again:
        _part_of_a_large_message(peer, 1)
    for peer in again:
        assert peer.answer(1, seconds=1)["headers"] == {}
        peer.close()
    answer = httpx.post(f"{base_url}/anomaly-score", content=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    still_serves(target)


def test_a_compressed_message_and_a_wrong_content_type_are_refused(target: str) -> None:
    peer = Peer(target)
    peer.send(peer.headers(1), f.frame(f.DATA, f.END_STREAM, 1, b"\x01" + infer_message()[1:]))
    assert peer.answer(1)["headers"].get("grpc-status") == "13"  # INTERNAL: none negotiated
    block = peer.encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), ("content-type", "text/x")]
    )
    peer.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 3, block))
    ended_with(peer.answer(3), "13", "application/grpc")
    peer.close()


def test_a_flood_of_empty_messages_on_a_stream_ends_that_stream(target: str) -> None:
    """Each empty message is 5 bytes of the window but a Python object queued: a stream may
    have at most 4,096 waiting."""
    peer = Peer(target)
    peer.send(peer.headers(1, STREAM))
    flood = message(b"") * 3_000  # 15,000 bytes: within the stream's window twice over
    peer.send(f.frame(f.DATA, 0, 1, flood), f.frame(f.DATA, 0, 1, flood))
    ended_with(peer.answer(1), "8", "waiting on the stream")  # RESOURCE_EXHAUSTED
    peer.close()
    still_serves(target)


def test_too_many_streams_are_refused_one_by_one(target: str) -> None:
    peer = Peer(target)
    for stream in range(1, 2 * 101, 2):  # 101 calls that never send their message
        peer.send(peer.headers(stream))
    seen = peer.answer(201)
    assert seen["reset"] == f.REFUSED_STREAM
    # The calls held open end on their own: no message came within the stream idle timeout.
    assert peer.answer(1, seconds=5)["headers"].get("grpc-status") == "4"  # DEADLINE_EXCEEDED
    peer.close()
    still_serves(target)


def test_a_silent_peer_is_let_go(target: str) -> None:
    """Connected, and never a preface: closed after PREFACE_S (10 s)."""
    peer = Peer(target, preface=False)
    started = time.monotonic()
    peer.goaway(seconds=15)
    assert peer.sock.recv(1) == b""  # closed
    assert time.monotonic() - started < 14
    peer.close()


def test_a_peer_that_reads_nothing_frees_its_call(target: str) -> None:
    """A window of 0 for every stream: the answer can never be sent. The call gives up after
    VAE_GRPC_STREAM_IDLE_TIMEOUT_S (1 s here) and says so in trailers, which flow control does
    not hold back."""
    peer = Peer(target, preface=False)
    peer.send(f.PREFACE + f.settings_frame({f.INITIAL_WINDOW_SIZE: 0}))
    peer.send(peer.headers(1), f.frame(f.DATA, f.END_STREAM, 1, infer_message()))
    seen = peer.answer(1)
    assert seen["data"] == b""
    ended_with(seen, "4", "read none of its answer")  # DEADLINE_EXCEEDED
    peer.close()
    still_serves(target)


def test_the_clients_deadline_ends_its_call(target: str) -> None:
    """grpc-timeout 300m on a stream that sends nothing: DEADLINE_EXCEEDED at 0.3 s, before
    the server's own idle limit (1 s here)."""
    peer = Peer(target)
    started = time.monotonic()
    peer.send(peer.headers(1, STREAM, extra=(("grpc-timeout", "300m"),)))
    ended_with(peer.answer(1), "4", "Deadline Exceeded")
    assert time.monotonic() - started < 0.9
    peer.close()
