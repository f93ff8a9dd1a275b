"""The request lines' writer: the JSON formatter's line, key for key; whole lines in writes a
pipe keeps atomic; written within FLUSH_S on a real event loop, at once past FLUSH_BYTES, and
at close."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from typing import Any

import pytest

from service.observability.logs import json_formatter
from service.observability.request_context import RequestRecord
from service.observability.request_lines import (
    ACCESS_LOGGER,
    ATOMIC_WRITE_BYTES,
    FLUSH_BYTES,
    RequestLines,
)

SCOPE: dict[str, Any] = {"method": "POST", "path": "/reconstruct", "client": ("10.0.0.7", 5123)}


def answered(request_id: str = "r-1") -> RequestRecord:
    record = RequestRecord(request_id)
    record.status, record.model, record.version, record.items = 200, "digits-vae", "1", 3
    record.queue_s, record.inference_s, record.decode_s, record.encode_s = 1e-5, 2e-4, 3e-5, 4e-6
    return record


class Writes:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def lines(self) -> list[dict[str, Any]]:
        text = b"".join(self.chunks).decode()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]


def test_the_line_is_the_json_formatters_line_key_for_key() -> None:
    """The line python-json-logger wrote for the same request, before lines were batched: same
    keys in the same order, same values but the time."""
    writes = Writes()
    lines = RequestLines(writes, flush_s=0)
    record = answered()
    lines.add(SCOPE, record, "/reconstruct", 0.0012346)
    (ours,) = writes.lines()

    formatted = io.StringIO()
    handler = logging.StreamHandler(formatted)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger(ACCESS_LOGGER + ".reference")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.info(
        {
            "message": "POST /reconstruct 200",
            "request_id": "r-1",
            "protocol": "http",
            "method": "POST",
            "route": "/reconstruct",
            "path": "/reconstruct",
            "status": 200,
            "latency_ms": round(0.0012346 * 1000, 3),
            "model": "digits-vae",
            "version": "1",
            "items": 3,
            "batch_size": 3,
            "queue_ms": 0.01,
            "inference_ms": 0.2,
            "decode_ms": 0.03,
            "encode_ms": 0.004,
            "client": "10.0.0.7",
        }
    )
    logger.removeHandler(handler)
    reference = json.loads(formatted.getvalue())
    reference["logger"] = ACCESS_LOGGER
    assert list(ours) == list(reference)
    assert {k: v for k, v in ours.items() if k != "time"} == {
        k: v for k, v in reference.items() if k != "time"
    }
    assert ours["pid"] == os.getpid()
    assert ours["time"].endswith("+00:00")


def test_writes_hold_whole_lines_within_the_atomic_size() -> None:
    writes = Writes()
    lines = RequestLines(writes, flush_s=60)
    long_path = {**SCOPE, "path": "/" + "p" * 6000}  # one line longer than a pipe's atomic write

    async def serve() -> None:
        for i in range(40):
            lines.add(long_path if i == 17 else SCOPE, answered(f"r-{i}"), "/reconstruct", 0.001)
        assert writes.chunks == []  # nothing written before a flush is due
        lines.flush()

    asyncio.run(serve())
    assert [line["request_id"] for line in writes.lines()] == [f"r-{i}" for i in range(40)]
    assert len(writes.chunks) > 1
    for chunk in writes.chunks:
        assert chunk.endswith(b"\n")
        if len(chunk) > ATOMIC_WRITE_BYTES:
            assert chunk.count(b"\n") == 1  # only a line that cannot fit goes over, alone
    lines.flush()  # nothing waits: nothing written
    assert sum(chunk.count(b"\n") for chunk in writes.chunks) == 40


def test_lines_are_written_within_flush_s_and_at_once_past_flush_bytes() -> None:
    writes = Writes()

    async def serve() -> tuple[int, int, int]:
        lines = RequestLines(writes, flush_s=0.05)
        lines.add(SCOPE, answered("first"), "/reconstruct", 0.001)
        waiting_at_first = len(writes.chunks)
        await asyncio.sleep(0.2)
        after_flush_s = len(writes.chunks)
        writes.chunks.clear()
        count = 0
        while not writes.chunks:  # lines pile up until FLUSH_BYTES: then written in the call
            lines.add(SCOPE, answered(f"r-{count}"), "/reconstruct", 0.001)
            count += 1
        lines.close()
        return waiting_at_first, after_flush_s, count

    waiting_at_first, after_flush_s, count = asyncio.run(serve())
    assert waiting_at_first == 0
    assert after_flush_s == 1
    line_bytes = FLUSH_BYTES / count
    assert 300 < line_bytes < 700  # written when FLUSH_BYTES waited, not line by line


def test_close_writes_what_waits_and_a_failing_stdout_is_not_the_requests_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    writes = Writes()
    lines = RequestLines(writes, flush_s=60)

    async def serve() -> None:
        lines.add(SCOPE, answered(), "/reconstruct", 0.001)
        assert writes.chunks == []
        lines.close()

    asyncio.run(serve())
    assert len(writes.lines()) == 1

    def broken(chunk: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    failing = RequestLines(broken, flush_s=0)
    failing.add(SCOPE, answered(), "/reconstruct", 0.001)  # no exception reaches the request
    failing.close()
    assert "request lines could not be written" in capsys.readouterr().err
