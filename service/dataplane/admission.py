"""Admission control: a bounded number of model calls at once and a bounded queue behind them.

Past the queue a request is refused at once with 503 and Retry-After, so an overloaded worker
answers quickly instead of letting latency and memory grow without bound. Waiters are served
in arrival order. Everything runs on the worker's event loop, so plain counters suffice.
"""

from __future__ import annotations

import asyncio
from collections import deque

from service.errors import Overloaded


class AdmissionControl:
    def __init__(self, max_concurrency: int, max_queue: int, retry_after_s: int):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after = str(retry_after_s)
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.refused = 0  # requests answered 503 because the queue was full; for tests/metrics

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a free slot if there is one and nobody is waiting for it (the common case,
        without the cost of a coroutine)."""
        if self.running < self.max_concurrency and not self._waiters:
            self.running += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line when all are busy; Overloaded when the line is full."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_queue:
            self.refused += 1
            raise Overloaded(
                f"{self.running} model calls running and {len(self._waiters)} waiting: the "
                "limits (VAE_MAX_CONCURRENCY, VAE_MAX_QUEUE) are reached; retry later",
                {"running": self.running, "queued": len(self._waiters)},
                headers={"Retry-After": self.retry_after},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait was cancelled: pass it on.
                self.release()
            elif waiter in self._waiters:  # release() may have dropped it already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give the slot to the first waiter still waiting, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves over; `running` is unchanged
                return
        self.running -= 1
