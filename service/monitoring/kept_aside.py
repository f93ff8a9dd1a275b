"""What the rings keep aside between writes, and why.

A scored request's items cost the request path little more than their arrays' bytes: the
drift window keeps one bytes object a batch (its rows: score, code, features), the feedback
ring one an item (score and index, then the request id). `flush` writes them into the ring as
one block, stamped then (at most 0.25 s late) and flagged against the calibrated threshold:
once FLUSH_ITEMS wait, on the app's timer (service.dataplane.monitor_flush, every 0.25 s), or
when this worker reads its own ring. Other workers see the items once written.

Measured on a single-item /anomaly-score in one process, monitors attached against detached
(`python -m bench.asgi_cost --monitoring-pairs` in alternate rounds, `--monitoring-interleaved`
request by request; bench/MONITORING.md):

- stop 33's design (scores and flags as Python values, codes as bytes, appended to lists
  under a lock): pairs +10.7 and +11.2 us a request, of ~200 on that day;
- kept tuples of the request's arrays instead: +7.7 (pairs), and Python's collector ran every
  ~700 requests (a tuple is a container it tracks) with a full collection of the heap now and
  then: 75 ms over 20,000 requests, 3.8 us a request on its own;
- as here, nothing kept that the collector tracks, the common case in one frame, no flags
  kept, request ids hashed in numpy at the write (service.monitoring.feedback.id_keys, 0.15 us
  an id against the previous CRC-32s' 0.66): pairs +5.0 (four runs pooled), interleaved +2.4,
  no collection.

The hot loop (`python -m bench.monitor_cost`) says ~1 us an item: inside a request every
numpy call and Python frame costs two to three times what a hot loop shows.

A deque: executor threads may keep while the loop drains, and its append, extend and popleft
are atomic (a list swapped for an empty one could lose an append). Memory: at most FLUSH_ITEMS
items plus one batch wait (a batch that reaches FLUSH_ITEMS alone is written by the request
that brought it), a few hundred kB.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import numpy as np

FLUSH_ITEMS = 1024
T = TypeVar("T")
# numpy's descriptors of built-in types are singletons: `is` tells an array's type in ~30 ns.
FLOAT64, FLOAT32 = np.dtype(np.float64), np.dtype(np.float32)


class KeptAside(Generic[T]):
    """Batches put by the request path, drained as one block by the ring's flush (bytes
    objects only: nothing the garbage collector tracks). The rings inline `keep` on their
    single-item path."""

    def __init__(self) -> None:
        # A deque: executor threads may keep while the loop drains, and its append and
        # popleft are atomic (a list swapped for an empty one could lose an append).
        self.entries: deque[T] = deque()
        # Items waiting: only the trigger of a write, approximate across threads (`+=` is not
        # atomic); the app's timer bounds how long any entry waits.
        self.items = 0

    def keep(self, entry: T, items: int) -> bool:
        """Keep a batch of `items` items; True when FLUSH_ITEMS or more wait for a write."""
        self.entries.append(entry)
        self.items += items
        return self.items >= FLUSH_ITEMS

    def keep_all(self, entries: list[T]) -> bool:
        """Keep a batch of entries an item, together (deque.extend of a list is atomic)."""
        self.entries.extend(entries)
        self.items += len(entries)
        return self.items >= FLUSH_ITEMS

    def drain(self) -> list[T]:
        """Every batch kept so far, oldest first; those kept meanwhile wait for the next."""
        self.items = 0
        take = self.entries.popleft
        return [take() for _ in range(len(self.entries))]
