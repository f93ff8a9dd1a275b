"""Admission control and the request timeout: bounded running and waiting, 503 past them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.dataplane.admission import AdmissionControl
from service.dataplane.inference import Inference, Plan
from service.errors import Overloaded, RequestTimedOut
from service.models.results import DecodeResult
from service.settings import ServiceSettings


def test_slots_then_queue_then_503_with_retry_after() -> None:
    async def main() -> None:
        gate = AdmissionControl(max_concurrency=2, max_queue=1, retry_after_s=7)
        await gate.acquire()
        await gate.acquire()
        waiting = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert not waiting.done()
        assert gate.queued == 1
        with pytest.raises(Overloaded) as refused:
            await gate.acquire()
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": "7"}
        assert gate.refused == 1
        gate.release()  # the slot goes to the waiter, not back to the pool
        await waiting
        assert gate.running == 2
        assert gate.queued == 0
        gate.release()
        gate.release()
        assert gate.running == 0

    asyncio.run(main())


def test_waiters_are_served_in_arrival_order() -> None:
    async def main() -> None:
        gate = AdmissionControl(max_concurrency=1, max_queue=10, retry_after_s=1)
        await gate.acquire()
        order: list[int] = []

        async def wait(index: int) -> None:
            await gate.acquire()
            order.append(index)
            gate.release()

        tasks = [asyncio.ensure_future(wait(i)) for i in range(5)]
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert gate.running == 0
        assert gate.queued == 0

    asyncio.run(main())


def test_a_cancelled_waiter_gives_back_its_place_and_any_slot_it_was_handed() -> None:
    async def main() -> None:
        gate = AdmissionControl(max_concurrency=1, max_queue=2, retry_after_s=1)
        await gate.acquire()
        first = asyncio.ensure_future(gate.acquire())
        second = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert gate.queued == 1
        gate.release()  # goes to `second`, skipping the cancelled one
        await second
        # handed a slot and cancelled in the same turn: the slot must not leak
        third = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        gate.release()
        third.cancel()
        await asyncio.gather(third, return_exceptions=True)
        assert gate.running == 0
        assert gate.queued == 0

    asyncio.run(main())


def _slow_plan(seconds: float) -> Callable[[], Plan]:
    """A request whose decoding gives a model call of `seconds`, as `Inference.run` takes it."""

    def compute(items: Any) -> DecodeResult:
        time.sleep(seconds)  # stands for a long onnxruntime call in the executor
        return DecodeResult(np.asarray(items))

    return lambda: Plan(compute, np.zeros((1, 4), np.float32), (4,), None, values=4)


def test_the_timeout_answers_503_and_keeps_the_slot_until_the_call_ends() -> None:
    settings = ServiceSettings(
        request_timeout_s=0.05, inline_max_values=0, max_concurrency=1, retry_after_s=2
    )

    async def main() -> None:
        inference = Inference(settings)
        began = time.perf_counter()
        with pytest.raises(RequestTimedOut) as timed_out:
            await inference.run(_slow_plan(0.4))
        assert time.perf_counter() - began < 0.3
        assert timed_out.value.status == 503
        assert timed_out.value.headers == {"Retry-After": "2"}
        # the thread still runs, so its slot is still taken: a second call waits, then
        # times out waiting, rather than overcommitting the executor
        assert inference.admission.running == 1
        with pytest.raises(RequestTimedOut, match="waiting for a free model slot"):
            await inference.run(_slow_plan(0.0))
        await asyncio.sleep(0.5)
        assert inference.admission.running == 0
        result = await inference.run(_slow_plan(0.0))
        assert isinstance(result, DecodeResult)
        assert result.outputs.shape == (1, 4)
        inference.close()

    asyncio.run(main())


def test_overload_refuses_at_once_while_the_admitted_finish() -> None:
    settings = ServiceSettings(inline_max_values=0, max_concurrency=2, max_queue=2)

    async def main() -> None:
        inference = Inference(settings)
        outcomes = await asyncio.gather(
            *(inference.run(_slow_plan(0.1)) for _ in range(8)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, Overloaded)]
        served = [o for o in outcomes if isinstance(o, DecodeResult)]
        assert len(served) == 4
        assert len(refused) == 4
        assert inference.admission.running == 0
        inference.close()

    asyncio.run(main())


def test_auto_concurrency_follows_threads_and_batching() -> None:
    assert ServiceSettings(executor_threads=3).concurrency_limit() == 3
    batching = ServiceSettings(
        executor_threads=2, dynamic_batching=True, batching_max_batch_size=32
    )
    assert batching.concurrency_limit() == 64
    assert ServiceSettings(max_concurrency=5, dynamic_batching=True).concurrency_limit() == 5
