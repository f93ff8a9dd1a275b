"""Dynamic batching: requests that arrive together run as one onnxruntime call.

Requests are grouped by a key (model, route, parameters) on the event loop. A group is sent to
the executor when it holds `max_items` items or `max_delay` after its first request, whichever
comes first; the merged result is split back so each caller gets its own rows. That is only
correct for computations that treat items independently (`compute(concat(xs))` split equals
`[compute(x) for x in xs]`), which the caller guarantees through the key: seeded sampling is
never batched. If a merged batch fails, its requests are retried one by one, so one bad
request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from bundle.arrays import FloatArray
from service.models.results import OperationResult

Compute = Callable[[FloatArray], OperationResult]


@dataclass
class _Group:
    compute: Compute
    inputs: list[FloatArray] = field(default_factory=list)
    futures: list[asyncio.Future[OperationResult]] = field(default_factory=list)
    count: int = 0
    timer: asyncio.TimerHandle | None = None
    size: int = 0  # items of the merged call
    started: float = 0.0  # time.perf_counter() when it began, in its thread
    seconds: float = 0.0  # how long it ran


@dataclass
class BatchTicket:
    """What a caller learns of the merged call that carried its items (for metrics and logs)."""

    size: int = 0
    started: float = 0.0
    seconds: float = 0.0


def split_result(result: OperationResult, sizes: list[int]) -> list[OperationResult]:
    """Each request's rows of a merged result (the fields it declares per item)."""
    parts: list[OperationResult] = []
    start = 0
    for size in sizes:
        parts.append(result.rows(start, start + size))
        start += size
    return parts


class DynamicBatcher:
    def __init__(
        self,
        executor: Executor,
        *,
        max_items: int,
        max_delay_seconds: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.executor = executor
        self.max_items = max_items
        self.max_delay = max_delay_seconds
        self.on_batch = on_batch  # told the item count of each merged call (metrics)
        self._groups: dict[Hashable, _Group] = {}
        self.batches_run = 0  # how many merged onnxruntime calls; for tests and metrics

    async def run(
        self,
        key: Hashable,
        items: FloatArray,
        compute: Compute,
        ticket: BatchTicket | None = None,
    ) -> OperationResult:
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        if group is None:
            group = _Group(compute)
            self._groups[key] = group
            group.timer = loop.call_later(self.max_delay, self._flush, key)
        future: asyncio.Future[OperationResult] = loop.create_future()
        group.inputs.append(items)
        group.futures.append(future)
        group.count += len(items)
        if group.count >= self.max_items:
            self._flush(key)
        result = await future
        if ticket is not None:
            ticket.size, ticket.started, ticket.seconds = group.size, group.started, group.seconds
        return result

    def _flush(self, key: Hashable) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._execute(group))
        task.add_done_callback(_log_task_failure)

    async def _execute(self, group: _Group) -> None:
        loop = asyncio.get_running_loop()
        self.batches_run += 1
        merged = group.inputs[0] if len(group.inputs) == 1 else np.concatenate(group.inputs)
        group.size = len(merged)
        if self.on_batch is not None:
            self.on_batch(group.size)

        def timed(batch: FloatArray) -> OperationResult:
            # Stamped in the thread: the wait for a free thread is queueing, not model time.
            group.started = time.perf_counter()
            try:
                return group.compute(batch)
            finally:
                group.seconds = time.perf_counter() - group.started

        try:
            result = await loop.run_in_executor(self.executor, timed, merged)
        except Exception:
            await self._one_by_one(group)
            return
        for future, part in zip(
            group.futures, split_result(result, [len(x) for x in group.inputs]), strict=True
        ):
            if not future.done():
                future.set_result(part)

    async def _one_by_one(self, group: _Group) -> None:
        loop = asyncio.get_running_loop()
        for items, future in zip(group.inputs, group.futures, strict=True):
            try:
                result = await loop.run_in_executor(self.executor, group.compute, items)
            except Exception as error:  # delivered to its own caller, who handles it
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        import logging

        logging.getLogger("vae_service.batching").error(
            "batch task failed", exc_info=task.exception()
        )
