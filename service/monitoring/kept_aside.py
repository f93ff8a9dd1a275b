"""What the rings keep aside between writes, and why.

A scored request's items cost the request path little more than their arrays' bytes: the
drift window keeps one bytes object a batch (its rows: score, code, features), the feedback
ring one an item (score and index, then the request id). `flush` writes them into the ring as
one block, stamped then (at most 0.25 s late) and flagged against the calibrated threshold:
on the app's timer (service.dataplane.monitor_flush, every 0.25 s), when this worker reads its
own ring, or once FLUSH_ITEMS items of batches wait. Other workers see the items once written.

A single item costs its request a check, its bytes and an append: no count, no size test.
Memory is bounded by the deque itself, which holds at most as many entries as its ring holds
items, and at most MOST_KEPT: when more wait, an append pushes out the oldest. Below the
ring's size that is an item the ring would have overwritten at the write anyway; past
MOST_KEPT (4,096 items waiting, four times what a worker serves between two writes at full
rate: the event loop stalled for a second) the oldest are not remembered. Batches, whose
entries hold many items, also count their items and are written once FLUSH_ITEMS wait.

Measured on a single-item /anomaly-score in one process, monitors attached against detached
(`python -m bench.asgi_cost --monitoring-pairs` in alternate rounds, `--monitoring-interleaved`
request by request, `python -m bench.monitor_instructions` CPU instructions under callgrind;
bench/MONITORING.md):

- stop 33's design (scores and flags as Python values, codes as bytes, appended to lists
  under a lock): pairs +10.7 and +11.2 us a request, of ~200 on that day;
- kept tuples of the request's arrays instead: +7.7 (pairs), and Python's collector ran every
  ~700 requests (a tuple is a container it tracks) with a full collection of the heap now and
  then: 75 ms over 20,000 requests, 3.8 us a request on its own;
- bytes only, nothing the collector tracks, the common case in one frame, no flags kept,
  request ids hashed in numpy at the write (service.monitoring.feedback.id_keys): pairs +5.0
  (four runs pooled), interleaved +2.4, no collection;
- as here (stop 38): no `.dtype` reads (~400 instructions each; a length check instead), no
  count on a single item, the window's rows written as one copy, the feedback ring in
  columns: +12,255 -> +9,148 instructions a request (~2.2 us), pairs +5.9 -> +3.2 to +4.0 us
  (400 rounds), interleaved +2.8 to +3.5 -> +2.2 to +2.8.

A deque: executor threads may keep while the loop drains, and its append and popleft are
atomic; the drain calls popleft from C, so no thread runs in between.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat, starmap
from typing import Generic, TypeVar

FLUSH_ITEMS = 1024
# Single items kept at most while a write is awaited: the app's timer writes every 0.25 s, when
# a worker at full rate has served ~1,000; four times that leaves room for a late timer, and
# bounds memory where a ring is large (VAE_MONITOR_FEEDBACK_ITEMS may be 1,000,000).
MOST_KEPT = 4096
T = TypeVar("T")


class KeptAside(Generic[T]):
    """Entries put by the request path, drained as one block by the ring's flush (bytes
    objects only: nothing the garbage collector tracks). The rings append single items to
    `entries` themselves, on their request path."""

    def __init__(self, ring_items: int) -> None:
        """`ring_items`: the items the ring holds; older entries would be overwritten by the
        newer at the write, so no more are kept (nor more than MOST_KEPT)."""
        self.entries: deque[T] = deque(maxlen=min(ring_items, MOST_KEPT))
        # Items of batches waiting: only the trigger of a batch's write, approximate across
        # threads (`+=` is not atomic); the app's timer bounds how long any entry waits.
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
        """Every entry kept so far, oldest first; those kept meanwhile wait for the next."""
        self.items = 0
        # popleft called from C as many times as there are entries now: no bytecode runs in
        # between, so no other thread either (a comprehension also cost 8 bytecodes an entry).
        return list(starmap(self.entries.popleft, repeat((), len(self.entries))))
