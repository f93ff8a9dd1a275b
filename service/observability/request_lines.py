"""The JSON request lines (VAE_LOG_FORMAT=json, at info level), made in one step and written in
batches.

Through Python's logging, a request's line cost 58 us of a single-item 64-input request's 236
(`bench.asgi_cost`, logging at info to /dev/null): a LogRecord, python-json-logger's formatter
and a write and flush per line, a third of the request. Here the line is one `orjson.dumps` of
the request's record, kept in memory and written with others: FLUSH_S after the first line
waiting, at once when FLUSH_BYTES are waiting, and when the worker stops (the app's lifespan,
and at exit). The line is the one the JSON formatter wrote, key for key and in the same order
(`service.observability.logs`), so a log collector sees no difference but the timing.

Each write holds whole lines and at most PIPE_BUF bytes, which POSIX makes atomic on a pipe:
workers sharing one stdout (a container's log pipe) never cut each other's lines. A line longer
than that (a 16 KiB path) goes alone, as every line did before.

The price, said in docs/operations.md: a request line reaches stdout up to FLUSH_S after its
answer, so it can follow a warning logged later; each line carries its own time. A worker
killed with SIGKILL loses the lines of its last FLUSH_S.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import select
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from service.asgi import Scope
from service.observability.request_context import RequestRecord

ACCESS_LOGGER = "vae_service.access"
FLUSH_S = 0.25
FLUSH_BYTES = 64 * 1024
ATOMIC_WRITE_BYTES = select.PIPE_BUF  # 4096 on Linux


def write_stdout(chunk: bytes) -> None:
    """Write to the process's stdout, after whatever its text layer still holds."""
    stream = sys.stdout
    stream.flush()
    binary = getattr(stream, "buffer", None)
    if binary is None:  # replaced by a text-only stream (a test's capture)
        stream.write(chunk.decode())
        return
    binary.write(chunk)
    binary.flush()


def _ms(seconds: float | None) -> float | None:
    # Milliseconds to the microsecond, as round(seconds * 1000, 3) gave them but for exact
    # halves (rounded up here), in a quarter of its time (round() took 0.56 us, five a line).
    return None if seconds is None else int(seconds * 1e6 + 0.5) / 1000


class RequestLines:
    """One worker's request lines: `add` one per answered request, `flush` what waits."""

    def __init__(
        self, write: Callable[[bytes], object] = write_stdout, flush_s: float = FLUSH_S
    ) -> None:
        self.write = write
        self.flush_s = flush_s  # 0: every line written at once
        self._pid = os.getpid()
        self._waiting: list[bytes] = []
        self._waiting_bytes = 0
        self._flush_due: asyncio.TimerHandle | None = None
        atexit.register(self.flush)

    def add(self, scope: Scope, record: RequestRecord, route: str, seconds: float) -> None:
        """The request's line: who asked what, what answered, how long each stage took. Never
        a header's value (API keys), the query string or a body."""
        method, path, status = scope["method"], scope["path"], record.status or 500
        client = scope.get("client")
        line = orjson.dumps(
            {
                "level": "INFO",
                "logger": ACCESS_LOGGER,
                "pid": self._pid,
                "message": f"{method} {path} {status}",
                "request_id": record.request_id,
                "protocol": record.protocol,
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "latency_ms": _ms(seconds),
                "model": record.model,
                "version": record.version,
                "items": record.items,
                # Items of the onnxruntime call: the request's own unless a dynamic batch
                # merged it.
                "batch_size": record.items if record.batch_size is None else record.batch_size,
                "queue_ms": _ms(record.queue_s),
                "inference_ms": _ms(record.inference_s),
                "decode_ms": _ms(record.decode_s),
                "encode_ms": _ms(record.encode_s),
                "client": client[0] if client else None,
                "time": datetime.now(UTC),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        self._waiting.append(line)
        self._waiting_bytes += len(line)
        if self._waiting_bytes >= FLUSH_BYTES or self.flush_s <= 0:
            self.flush()
        elif self._flush_due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop: nothing would flush it later
                self.flush()
                return
            self._flush_due = loop.call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        """Write every waiting line, in writes of whole lines within ATOMIC_WRITE_BYTES."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        chunk: list[bytes] = []
        size = 0
        for line in waiting:
            if chunk and size + len(line) > ATOMIC_WRITE_BYTES:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, chunk: bytes) -> None:
        try:
            self.write(chunk)
        except (OSError, ValueError) as error:  # stdout closed or gone: as logging does, say
            # so on stderr and go on serving; these lines are lost.
            print(f"request lines could not be written: {error!r}", file=sys.stderr)

    def close(self) -> None:
        """Flush, and stop flushing at exit (the app is done with these lines)."""
        self.flush()
        atexit.unregister(self.flush)
