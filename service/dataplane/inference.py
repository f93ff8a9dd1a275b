"""Where a request's work runs: admission control (bounded running and queued calls), the
request's deadline, decoding inline or in the executor, the model call inline, in the executor
or through the dynamic batcher. A `Plan` is what the operations hand it: the items, the call,
and whether it may share a batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bundle.arrays import FloatArray
from service.dataplane.admission import AdmissionControl
from service.dataplane.batching import BatchTicket, DynamicBatcher
from service.dataplane.body import BodyBudget, BodyReader
from service.dataplane.coalescing import Coalescer
from service.dataplane.memory import TRIM_AFTER_BYTES, MemoryReturn
from service.errors import OutOfMemory, Overloaded, PayloadTooLarge, RequestTimedOut
from service.models.results import OperationResult
from service.observability.metrics import ServiceMetrics
from service.observability.request_context import current_request
from service.settings import ServiceSettings

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Plan:
    """How to run one request: alone, or merged with others into one onnxruntime batch.

    `batch_key` names requests that may share a batch (same model, route and parameters);
    `items` is the request's array in the model's canonical layout, and `layout` the layout
    the client sent, which the result's per-item fields are given back
    (`OperationResult.in_layout`).
    """

    compute: Callable[[FloatArray], OperationResult]
    items: FloatArray
    layout: tuple[int, ...]
    batch_key: tuple[Any, ...] | None
    values: int = 0  # numbers the model touches (items x features): the size of the work


class Inference:
    """Where a request's work runs, behind admission control (bounded running and queued
    calls) and the request's deadline: decoding the body (inline when small, else in the
    executor), then the model call (inline, the executor, or the batcher when batching is on).
    The worker's budget for request bodies in memory lives here too."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics | None = None):
        self.metrics = metrics
        self.inline_max_values = settings.inline_max_values
        self.timeout = settings.request_timeout_s or None
        self.executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads(), thread_name_prefix="inference"
        )
        self.admission = AdmissionControl(
            settings.concurrency_limit(), settings.max_queue, settings.retry_after_s
        )
        self.body_budget = BodyBudget(settings.max_body_buffer_bytes, settings.retry_after_s)
        self.memory = MemoryReturn(self.executor)
        self.batcher = (
            DynamicBatcher(
                self.executor,
                max_items=settings.batching_max_batch_size,
                max_delay_seconds=settings.batching_max_delay_us / 1e6,
                on_batch=None if metrics is None else metrics.record_batch,
            )
            if settings.dynamic_batching
            else None
        )
        self.coalescer = (
            Coalescer(
                _compute,
                max_values=settings.inline_max_values,
                on_batch=None if metrics is None else metrics.record_batch,
            )
            if settings.coalesce_inline_calls
            else None
        )

    def deadline(self) -> float | None:
        """When the current request must be answered, in event-loop time: VAE_REQUEST_TIMEOUT_S
        after it arrived (reading its body counts)."""
        if self.timeout is None:
            return None
        arrived = current_request().arrived
        if arrived is None:  # called outside a request (tests, benchmarks): from now
            arrived = asyncio.get_running_loop().time()
        return arrived + self.timeout

    def body_reader(self, receive: Receive, content_length: str | None) -> BodyReader:
        return BodyReader(receive, content_length, self.body_budget)

    async def run(self, decode: Callable[[], Plan], *, inline: bool = True) -> OperationResult:
        """Decode the request into a plan and run it. `inline`: decode on the event loop (small
        bodies); otherwise in the executor, after a model slot is taken. Its queue wait, decode
        and model time and batch go to the current request's record (metrics, log line)."""
        record = current_request()
        entered = time.perf_counter()
        loop = asyncio.get_running_loop()
        if not self.admission.try_acquire():
            try:
                remaining = _remaining(loop, self.deadline())
                await asyncio.wait_for(self.admission.acquire(), remaining)
            except TimeoutError:
                raise self._timed_out("waiting for a free model slot") from None
            except Overloaded:
                if self.metrics is not None:
                    self.metrics.overloaded.inc()
                raise
        admitted = time.perf_counter()
        pending: asyncio.Future[Any] | None = None
        released = False  # the model slot, given back early by a coalesced call
        try:
            # Timed whether or not it succeeds: refusing a body is decoding work too.
            if inline:
                try:
                    work = _decode(decode)
                finally:
                    record.decode_s = time.perf_counter() - admitted
            else:
                decoding = _TimedCall(_decode)
                pending = loop.run_in_executor(self.executor, decoding, decode)
                try:
                    work = await self._within(pending, loop, "decoding the body")
                finally:
                    record.decode_s = decoding.seconds
            pending = None
            decoded = time.perf_counter()
            ticket: BatchTicket | None = None
            call: _TimedCall | None = None
            if self.batcher is not None and work.batch_key is not None:
                ticket = BatchTicket()
                pending = asyncio.ensure_future(
                    self.batcher.run(work.batch_key, work.items, work.compute, ticket)
                )
            elif work.values <= self.inline_max_values:
                # Measured: handing a call to a thread and back costs ~200 us here, more than
                # a small model call itself; the loop is held no longer than JSON parsing
                # holds it.
                if self.coalescer is not None and work.batch_key is not None:
                    # The slot is given back first: the group runs on the loop, not on a
                    # model thread, and a slot held through the turn would cap the group
                    # at VAE_MAX_CONCURRENCY requests.
                    self.admission.release()
                    released = True
                    ticket = BatchTicket()
                    result = await self.coalescer.run(
                        work.batch_key, work.items, work.compute, work.values, ticket
                    )
                    record.queue_s = admitted - entered + max(0.0, ticket.started - decoded)
                    record.inference_s = ticket.seconds
                    record.batch_size = ticket.size
                else:
                    began = time.perf_counter()
                    result = _compute(work.compute, work.items)
                    record.inference_s = time.perf_counter() - began
                    record.queue_s = admitted - entered
            else:
                call = _TimedCall(_compute)
                pending = loop.run_in_executor(self.executor, call, work.compute, work.items)
            if pending is not None:
                result = await self._within(pending, loop, "running the model")
                waited = admitted - entered
                if ticket is not None:
                    record.queue_s = waited + max(0.0, ticket.started - decoded)
                    record.inference_s = ticket.seconds
                    record.batch_size = ticket.size
                elif call is not None:
                    record.queue_s = waited + max(0.0, call.started - decoded)
                    record.inference_s = call.seconds
        except _StillRunning as running:
            # The call goes on in its thread (it cannot be stopped) and keeps its slot until it
            # ends, so the concurrency bound stays true.
            running.pending.add_done_callback(self._release_after)
            raise running.error from None
        except BaseException:
            if not released:
                self.admission.release()
            raise
        if not released:
            self.admission.release()
        result.in_layout(work.layout)
        return result

    async def _within(
        self, pending: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, stage: str
    ) -> Any:
        try:
            # shield: on timeout the work goes on in its thread; see _StillRunning.
            remaining = _remaining(loop, self.deadline())
            return await asyncio.wait_for(asyncio.shield(pending), remaining)
        except TimeoutError:
            raise _StillRunning(pending, self._timed_out(stage)) from None

    def _release_after(self, finished: asyncio.Future[Any]) -> None:
        if not finished.cancelled():
            finished.exception()  # retrieved, so asyncio does not log it as never retrieved
        self.admission.release()

    def _timed_out(self, stage: str) -> RequestTimedOut:
        if self.metrics is not None:
            self.metrics.timed_out.inc()
        return RequestTimedOut(
            f"the request took longer than {self.timeout:g} s (VAE_REQUEST_TIMEOUT_S) {stage}",
            {"timeout_s": self.timeout},
            headers={"Retry-After": self.admission.retry_after},
        )

    def finished(self, reader: BodyReader | None, answer_bytes: int) -> None:
        """A request is answered: its body leaves the budget, and a large one's memory goes
        back to the system (service.dataplane.memory)."""
        if reader is None:
            return
        reader.release()
        if max(reader.received, answer_bytes) >= TRIM_AFTER_BYTES:
            self.memory.after(max(reader.received, answer_bytes))

    def close(self) -> None:
        self.memory.close()
        self.executor.shutdown(wait=True, cancel_futures=False)


class _StillRunning(Exception):
    """A deadline passed while work ran in a thread: `error` for the client, and the work that
    holds the request's model slot until it ends."""

    def __init__(self, pending: asyncio.Future[Any], error: RequestTimedOut) -> None:
        super().__init__(error.message)
        self.pending = pending
        self.error = error


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - loop.time())


def _decode(decode: Callable[[], Plan]) -> Plan:
    """A request's decoding, where running out of memory means the body asked for too much."""
    try:
        return decode()
    except MemoryError:
        raise PayloadTooLarge(
            "the request body is too large to decode in the memory this worker has; send a "
            "smaller batch"
        ) from None


def _compute(
    compute: Callable[[FloatArray], OperationResult], items: FloatArray
) -> OperationResult:
    """A model call, where running out of memory is the worker's state, not the request's
    fault: 503, retry later."""
    try:
        return compute(items)
    except MemoryError:
        raise OutOfMemory(
            "the worker ran out of memory computing this request; retry later or send a "
            "smaller batch",
            headers={"Retry-After": "1"},
        ) from None


class _TimedCall:
    """A function run in the executor, stamped in its thread: the wait for a free thread is
    queueing, not work."""

    __slots__ = ("function", "seconds", "started")

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.started = 0.0
        self.seconds = 0.0

    def __call__(self, *args: Any) -> Any:
        self.started = time.perf_counter()
        try:
            return self.function(*args)
        finally:
            self.seconds = time.perf_counter() - self.started
