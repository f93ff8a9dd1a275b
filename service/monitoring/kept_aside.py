"""What a ring keeps aside between writes: entries put by the request path, drained as one
batch by `flush` (service.monitoring.window and .feedback).

Measured in-process on a single-item /anomaly-score (`python -m bench.asgi_cost`, monitoring on
against off, three processes each): writing each request's items into the rings at once cost
+17 to +21 us a request (the micro-benchmark said 5: cold code and numpy calls per item), kept
aside and written FLUSH_ITEMS at a time +4 to +10 us (of ~300). Others see the items once
written: at FLUSH_ITEMS, on the app's timer (service.dataplane.monitor_flush, every 0.25 s), or
when this worker reads its own ring.
"""

from __future__ import annotations

import contextlib
import queue
from typing import Generic, TypeVar

FLUSH_ITEMS = 64
T = TypeVar("T")


class KeptAside(Generic[T]):
    # A SimpleQueue: executor threads may put while the loop drains (its put and get are
    # atomic; a list swapped under a lock could lose an entry).
    def __init__(self) -> None:
        self._entries: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._items = 0  # items in the entries: approximate across threads, only a trigger

    def put(self, entry: T, items: int) -> bool:
        """Keep `entry` (of `items` items); True when enough wait for a write."""
        self._entries.put(entry)
        self._items += items
        return self._items >= FLUSH_ITEMS

    def drain(self) -> list[T]:
        self._items = 0
        entries: list[T] = []
        with contextlib.suppress(queue.Empty):
            while True:
                entries.append(self._entries.get_nowait())
        return entries
