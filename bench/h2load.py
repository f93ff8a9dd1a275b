"""nghttp2's h2load as the gRPC benchmark's load generator: gRPC calls as raw HTTP/2 POSTs.

Why this one: the client shares the machine's two cores with the server it drives, so the
client's own CPU a call is part of every figure. h2load is C (nghttp2), one thread here, an
HTTP/2 connection per caller; it costs about what wrk costs a REST call, which makes a gRPC
figure comparable with the REST ones wrk measures. Measured on this machine against the same
server (8 callers, single items): h2load 33 us of CPU a call, wrk 35 us a REST call,
perf_analyzer (Triton's C++ client, bench/perf_analyzer.py) 105 us a call; a Python gRPC
client ~500 us. Each run here also records the client's CPU a call (`client_cpu_us`).

A gRPC call is an HTTP/2 POST to `/<service>/<method>` with `content-type: application/grpc`
and `te: trailers`, its body length-prefixed messages (the protocol's framing). h2load sends
the same prepared body on every call and counts HTTP status 200 as success, which a gRPC
error also is (its status rides in the trailers, with no DATA). So each body is first sent
once through grpcio (`probe`: a real client, which raises on any non-OK status) to learn the
exact size of its answer, and a run counts only when the DATA bytes it received equal the
calls it completed times that size: an error answered under load (RESOURCE_EXHAUSTED, say)
carries no message and fails the run. Runs have no h2load warm-up period because h2load
counts the warm-up's DATA bytes but not its calls; `warm_up` is a separate run instead.
(Checked: 7,321 calls in a 2 s run received 2,247,547 bytes, 7,321 x 307 exactly.)

Streams: one call to ModelStreamInfer carries `messages` single-item requests in one body, so
each caller streams its items without waiting for the answers (the reason to stream), and the
server's answers come back on the same call; items/s = calls/s x messages.
"""

from __future__ import annotations

import re
import resource
import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.grpc import inference_pb2 as pb

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"


class H2loadFailed(RuntimeError):
    pass


def binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise H2loadFailed("h2load not found: scripts/bench-tools.sh installs nghttp2-client")
    return found


def version() -> str:
    try:
        done = subprocess.run([binary(), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, H2loadFailed, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    return done.stdout.strip() or done.stderr.strip()


def framed(message: bytes) -> bytes:
    """One gRPC message on the wire: not compressed (0), its length (4 bytes big-endian)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def infer_message(
    model: str, input_name: str, rows: np.ndarray[Any, Any], outputs: Sequence[str] = ()
) -> bytes:
    """A ModelInferRequest holding `rows` (FP32, [B, features]) in raw_input_contents, asking
    for `outputs` by name (none named: every output, as the protocol says)."""
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = input_name, "FP32"
    tensor.shape.extend(rows.shape)
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    for name in outputs:
        request.outputs.add().name = name
    return request.SerializeToString()


@dataclass(frozen=True)
class Body:
    """A prepared call: the HTTP/2 path, the body h2load sends, the messages in it, and the
    DATA bytes a correct answer carries (from `probe`)."""

    path: str
    file: Path
    messages: int
    answer_bytes: int


def probe(target: str, path: str, messages: Sequence[bytes], timeout_s: float = 30.0) -> int:
    """Send the messages as one call through grpcio and return the answer's wire size (each
    answer message framed). Raises grpc.RpcError on any status but OK; a stream must answer
    each message once, with no error_message."""
    import grpc

    def raw(message: bytes) -> bytes:
        return message  # the messages are serialized already, the answers read raw

    with grpc.insecure_channel(target) as channel:
        answers: list[bytes]
        if path == STREAM_PATH:
            stream = channel.stream_stream(path, request_serializer=raw, response_deserializer=raw)
            answers = list(stream(iter(messages), timeout=timeout_s))
            for answer in answers:
                parsed = pb.ModelStreamInferResponse.FromString(answer)
                if parsed.error_message:
                    raise H2loadFailed(f"stream answered an error: {parsed.error_message}")
        else:
            unary = channel.unary_unary(path, request_serializer=raw, response_deserializer=raw)
            answers = [unary(messages[0], timeout=timeout_s)]
    if len(answers) != len(messages):
        raise H2loadFailed(f"{len(messages)} messages answered {len(answers)} times")
    return sum(len(framed(answer)) for answer in answers)


def prepare(target: str, path: str, messages: Sequence[bytes], file: Path) -> Body:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"".join(framed(m) for m in messages))
    return Body(path, file, len(messages), probe(target, path, messages))


@dataclass
class H2Result:
    calls: int  # calls completed in the measured run
    duration_s: float
    calls_per_s: float
    items_per_s: float  # calls x messages a call x items a message
    p50_ms: float
    p99_ms: float
    client_cpu_us: float  # h2load's user + system CPU a call
    connections: int
    raw_path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse(text: str) -> tuple[float, int, int, int, int]:
    """(seconds, done, succeeded, failed + errored, DATA bytes) from h2load's summary."""
    finished = re.search(r"finished in ([\d.]+)(ms|s),", text)
    counts = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored",
        text,
    )
    data = re.search(r"\((\d+)\) data", text)
    if finished is None or counts is None or data is None:
        raise H2loadFailed(f"h2load printed no summary: {text.strip()[-300:]}")
    seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    done, ok, failed, errored = (int(counts.group(i)) for i in range(1, 5))
    return seconds, done, ok, failed + errored, int(data.group(1))


def latencies_ms(log_path: Path) -> np.ndarray[Any, Any]:
    """The per-call times of h2load's --log-file (start us, status, duration us)."""
    columns = np.loadtxt(log_path, dtype=np.int64, ndmin=2)
    if columns.size == 0:
        raise H2loadFailed(f"{log_path} holds no call")
    return columns[:, 2].astype(np.float64) / 1000.0


def check_answers(
    calls: int, ok: int, failed: int, data: int, body: Body, connections: int, out: Path
) -> None:
    """Raise unless every completed call succeeded and carried a whole answer's bytes."""
    if failed or ok != calls or calls == 0:
        raise H2loadFailed(f"{calls} calls done, {ok} succeeded, {failed} failed ({out})")
    expected = calls * body.answer_bytes
    # A call still open at the end may have counted its answer's bytes: at most one a caller.
    if not expected <= data < expected + connections * body.answer_bytes:
        raise H2loadFailed(
            f"{calls} calls answered {data:,} bytes where answers of {body.answer_bytes} "
            f"bytes make {expected:,}: some calls were answered with an error ({out})"
        )


def command(
    target: str, body: Body, connections: int, span: tuple[str, int], log: Path | None
) -> list[str]:
    """h2load's arguments; `span` is ("-D", seconds) or ("-n", calls)."""
    return [
        binary(),
        span[0], str(span[1]),
        "-c", str(connections),
        "-m", "1",  # one call in flight per caller: a caller waits for its answer
        "-t", "1",
        "-d", str(body.file),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        *([f"--log-file={log}"] if log is not None else []),
        f"http://{target}{body.path}",
    ]  # fmt: skip


def warm_up(target: str, body: Body, connections: int) -> None:
    """Calls that all finish (a count, not a time, so none is left open for the server to
    finish after the client has gone): 100 a caller, or one stream each."""
    calls = connections * (1 if body.messages > 1 else 100)
    argv = command(target, body, connections, ("-n", calls), None)
    subprocess.run(argv, capture_output=True, timeout=120)


def run(
    target: str, body: Body, *, connections: int, seconds: int, items: int, out: Path
) -> H2Result:
    """One measured run of `seconds`: `connections` callers, each with one call in flight."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".calls.tsv")
    argv = command(target, body, connections, ("-D", seconds), log)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.write_text(f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise H2loadFailed(f"h2load exited {done.returncode}: {done.stderr.strip()[-300:]}")
    elapsed, calls, ok, failed, data = parse(done.stdout)
    check_answers(calls, ok, failed, data, body, connections, out)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    times = latencies_ms(log)
    log.unlink()  # large (a line a call); the percentiles are what is kept
    return H2Result(
        calls=calls,
        duration_s=elapsed,
        calls_per_s=calls / elapsed,
        items_per_s=calls * body.messages * items / elapsed,
        p50_ms=float(np.percentile(times, 50)),
        p99_ms=float(np.percentile(times, 99)),
        client_cpu_us=cpu_s / calls * 1e6,
        connections=connections,
        raw_path=str(out),
    )
