"""Small model calls that are ready in the same event-loop turn run as one onnxruntime call,
inline, waiting one event-loop turn at most.

Under load a worker's connections deliver their requests together: uvicorn parses whatever
arrived since the loop last polled, and each request becomes a task that runs in the next turn.
Each task decodes its body and joins a group for its batch key (same model, route and
parameters); the group runs once those tasks have had their turn (`loop.call_soon`), or at once
when it reaches `max_values` numbers, the bound every inline call keeps (VAE_INLINE_MAX_VALUES).
One call pays onnxruntime's fixed cost (~35 us in-process on the 64-input model, far more than
a row's own work) and the result checks once for the whole group. Measured with `python -m
bench.server_cpu` (one worker, make bench's single-item JSON /reconstruct, default settings
otherwise), worker CPU per request without -> with: 64 inputs 291 -> 212 us at 8 connections,
299 -> 181 us at 64; 784 inputs 377 -> 312 us and 385 -> 291 us. The price is paid by a request
alone, which waits one loop turn for company that never comes: at one connection 303-310 ->
336-344 us and 3,250 -> 2,930 requests/s (64 inputs). A service whose callers never overlap
can turn it off (VAE_COALESCE_INLINE_CALLS=false).

Only calls whose result for an item depends on that item alone share a group (the caller's
batch key says so, as for service.dataplane.batching), and onnxruntime's CPU kernels gave
identical bits for any batch size on make bench's models (tests/service/dataplane/
test_coalescing.py checks it on the committed bundle). A group whose call fails is rerun one
request at a time, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable

import numpy as np

from bundle.arrays import FloatArray
from service.dataplane.batching import BatchTicket, split_result
from service.models.results import OperationResult

Compute = Callable[[FloatArray], OperationResult]
# A model call as the caller runs it inline (it maps MemoryError to the worker's 503).
Runner = Callable[[Compute, FloatArray], OperationResult]


class _Group:
    __slots__ = ("compute", "futures", "inputs", "tickets", "values")

    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.inputs: list[FloatArray] = []
        self.futures: list[asyncio.Future[OperationResult]] = []
        self.tickets: list[BatchTicket] = []
        self.values = 0


class Coalescer:
    def __init__(
        self, run: Runner, *, max_values: int, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self._run = run
        self.max_values = max_values
        self.on_batch = on_batch  # told the item count of each merged call (metrics)
        self._groups: dict[Hashable, _Group] = {}
        self.calls = 0  # onnxruntime calls made for groups; for tests

    async def run(
        self, key: Hashable, items: FloatArray, compute: Compute, values: int, ticket: BatchTicket
    ) -> OperationResult:
        """This request's part of its group's call."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        if group is not None and group.values + values > self.max_values:
            self._call(key, group)  # full: it runs now, this request starts the next one
            group = None
        if group is None:
            group = self._groups[key] = _Group(compute)
            loop.call_soon(self._call, key, group)
        future: asyncio.Future[OperationResult] = loop.create_future()
        group.inputs.append(items)
        group.futures.append(future)
        group.tickets.append(ticket)
        group.values += values
        return await future

    def _call(self, key: Hashable, group: _Group) -> None:
        if self._groups.get(key) is not group:
            return  # it ran already, when it was full
        del self._groups[key]
        live = [i for i, future in enumerate(group.futures) if not future.done()]
        if not live:
            return  # every caller gave up (cancelled) before its turn
        try:
            self._merged(group, live)
        except Exception:
            # Whatever failed (a bad request's overflow, running out of memory merging), each
            # request runs alone and meets its own answer or error: none is left waiting.
            self._one_by_one(group, live)

    def _merged(self, group: _Group, live: list[int]) -> None:
        inputs = [group.inputs[i] for i in live]
        merged = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(len(merged))
        started = time.perf_counter()
        result = self._run(group.compute, merged)
        seconds = time.perf_counter() - started
        parts = [result] if len(live) == 1 else split_result(result, [len(x) for x in inputs])
        for i, part in zip(live, parts, strict=True):
            ticket = group.tickets[i]
            ticket.size, ticket.started, ticket.seconds = len(merged), started, seconds
            group.futures[i].set_result(part)

    def _one_by_one(self, group: _Group, live: list[int]) -> None:
        for i in live:
            future = group.futures[i]
            if future.done():
                continue  # answered before the merged call failed, or cancelled meanwhile
            ticket = group.tickets[i]
            ticket.size, ticket.started = len(group.inputs[i]), time.perf_counter()
            try:
                result = self._run(group.compute, group.inputs[i])
            except Exception as error:  # delivered to its own caller, who answers it
                future.set_exception(error)
            else:
                future.set_result(result)
            ticket.seconds = time.perf_counter() - ticket.started
