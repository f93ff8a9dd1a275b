"""Giving a worker's freed memory back to the operating system after large requests.

glibc's malloc keeps freed memory for reuse: after a burst of large requests (a 4096-item batch
decodes to megabytes of arrays, several at once across the executor's threads) a worker's
resident size stays where the burst left it, though nothing holds the memory any more.
`malloc_trim(0)` hands every free page back. It walks the heap (about a millisecond here), so
it runs in the executor, at most once per `TRIM_INTERVAL_S`, after a request that moved at
least `TRIM_AFTER_BYTES`; small requests never pay for it. Measured: after a burst of
4096-item requests a worker's RSS came back to within ~15-30 MiB of its start, where without
it it stayed ~60 MiB above (tests/e2e/test_hostile_clients.py holds it within 64 MiB). Under
sustained large requests it costs nothing measurable: 666 kB requests to the 784-input model
(`python -m bench.http_bench --scenarios S2 --models 784`) ran at 245 req/s with it, 241 with
no trim at all, and 248 when trimming only once they had stopped for a second.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from concurrent.futures import Executor

# Requests whose body or answer is at least this large leave enough freed memory behind to be
# worth a trim; a single-item request moves a few hundred bytes.
TRIM_AFTER_BYTES = 1024 * 1024
TRIM_INTERVAL_S = 1.0


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class MemoryReturn:
    """Trims the heap in the background a moment after large requests: one trim per
    `TRIM_INTERVAL_S` at most, and always one after the last large request of a burst."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.release = _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0  # for tests

    def after(self, size: int) -> None:
        """Note a request that moved `size` bytes (body in or answer out); on the event loop."""
        if self.release is None or size < TRIM_AFTER_BYTES or self._timer is not None:
            return
        self._timer = asyncio.get_running_loop().call_later(TRIM_INTERVAL_S, self._trim)

    def _trim(self) -> None:
        assert self.release is not None
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.release)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._timer = None
        self.trims += 1
        future.exception()  # retrieved: a failed trim is not worth a log line per request

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
