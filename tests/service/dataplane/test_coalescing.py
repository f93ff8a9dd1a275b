"""Inline calls ready in the same event-loop turn run as one onnxruntime call: the same bits as
each alone, one bad request failing alone, groups bounded by numbers, and through the real app
the same answers as with coalescing off."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.datasets import load_digits

from bundle.runtime import OnnxBundle
from service.api.app import create_app
from service.api.fastpath import FastPath
from service.asgi import ASGIApp, Message, Scope
from service.dataplane.batching import BatchTicket
from service.dataplane.coalescing import Coalescer
from service.dataplane.state import ServiceState
from service.errors import InvalidInput
from service.models.results import OperationResult, ReconstructResult, ScoreResult
from service.models.served_model import Limits, ServedModel
from service.settings import ServiceSettings

DIGITS = load_digits().data.astype(np.float32)


@pytest.fixture(scope="module")
def served(model_repository: Path) -> ServedModel:
    return ServedModel(OnnxBundle(model_repository / "digits-vae" / "1"), Limits(4096, 100, 64))


def _direct(compute: Any, items: np.ndarray) -> OperationResult:
    result: OperationResult = compute(items)
    return result


def _together(coalescer: Coalescer, calls: list[tuple[Any, np.ndarray, Any]]) -> list[Any]:
    """Every call started in one turn, as a worker's ready requests are."""

    async def main() -> list[Any]:
        tickets = [BatchTicket() for _ in calls]
        runs = [
            coalescer.run(key, items, compute, items.size, ticket)
            for (key, items, compute), ticket in zip(calls, tickets, strict=True)
        ]
        results: list[Any] = await asyncio.gather(*runs, return_exceptions=True)
        return [*results, tickets]

    *results, tickets = asyncio.run(main())
    return [*zip(results, tickets, strict=True)]


def test_a_turns_calls_run_once_and_give_each_the_bits_it_gets_alone(served: ServedModel) -> None:
    coalescer = Coalescer(_direct, max_values=10_000)
    requests = [served.check_inputs(DIGITS[i : i + 1 + i % 3]) for i in range(0, 30, 3)]

    def compute(x: np.ndarray) -> ScoreResult:
        return served.score(x, score_type=None, per_feature=True)

    answered = _together(coalescer, [("k", r, compute) for r in requests])
    assert coalescer.calls == 1
    merged = sum(len(r) for r in requests)
    for request, (result, ticket) in zip(requests, answered, strict=True):
        alone = compute(request)
        np.testing.assert_array_equal(result.scores, alone.scores)
        np.testing.assert_array_equal(result.feature_errors, alone.feature_errors)
        np.testing.assert_array_equal(result.tail_probability, alone.tail_probability)
        assert ticket.size == merged
        assert ticket.seconds > 0


def test_groups_stay_within_max_values_and_apart_by_key(served: ServedModel) -> None:
    coalescer = Coalescer(_direct, max_values=3 * 64)  # three single items per call

    def reconstruct(x: np.ndarray) -> ReconstructResult:
        return served.reconstruct(x, samples=None, seed=None)

    def encode(x: np.ndarray) -> OperationResult:
        return served.encode(x, sample=False, seed=None)

    items = [served.check_inputs(DIGITS[i : i + 1]) for i in range(8)]
    calls = [("reconstruct", x, reconstruct) for x in items[:7]] + [("encode", items[7], encode)]
    answered = _together(coalescer, calls)
    assert coalescer.calls == 3 + 1  # 3 + 3 + 1 reconstructions, and the encoding apart
    assert sorted(ticket.size for _, ticket in answered) == [1, 1, 3, 3, 3, 3, 3, 3]
    for x, (result, _) in zip(items[:7], answered[:7], strict=True):
        np.testing.assert_array_equal(result.outputs, reconstruct(x).outputs)


def test_one_bad_request_fails_alone(served: ServedModel) -> None:
    coalescer = Coalescer(_direct, max_values=10_000)

    def compute(x: np.ndarray) -> ReconstructResult:
        if np.any(x < 0):
            raise InvalidInput("negative values refused by this test's computation")
        return served.reconstruct(x, samples=None, seed=None)

    good = [served.check_inputs(DIGITS[i : i + 1]) for i in range(3)]
    bad = -served.check_inputs(DIGITS[5:6]) - 1.0
    answered = _together(coalescer, [("k", good[0], compute), ("k", bad, compute),
                                     ("k", good[1], compute)])  # fmt: skip
    assert isinstance(answered[1][0], InvalidInput)
    for x, (result, ticket) in zip([good[0], good[1]], [answered[0], answered[2]], strict=True):
        np.testing.assert_array_equal(result.outputs, compute(x).outputs)
        assert ticket.size == 1  # rerun alone


def test_a_caller_that_gives_up_leaves_its_group_working(served: ServedModel) -> None:
    coalescer = Coalescer(_direct, max_values=10_000)

    def compute(x: np.ndarray) -> ReconstructResult:
        return served.reconstruct(x, samples=None, seed=None)

    async def main() -> tuple[Any, Any]:
        first = asyncio.ensure_future(
            coalescer.run("k", served.check_inputs(DIGITS[:1]), compute, 64, BatchTicket())
        )
        second = asyncio.ensure_future(
            coalescer.run("k", served.check_inputs(DIGITS[1:2]), compute, 64, BatchTicket())
        )
        await asyncio.sleep(0)  # both joined the group
        first.cancel()
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(main())
    assert isinstance(first, asyncio.CancelledError)
    np.testing.assert_array_equal(second.outputs, compute(served.check_inputs(DIGITS[1:2])).outputs)


# --- through the real app ----------------------------------------------------------------


class RunningApp:
    """create_app's app with its lifespan run, called through ASGI as uvicorn calls it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __aenter__(self) -> RunningApp:
        self._lifespan: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        await self._lifespan.put({"type": "lifespan.startup"})

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._started.set()
            elif message["type"] == "lifespan.startup.failed":
                raise RuntimeError(message.get("message"))

        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self.app(scope, self._lifespan.get, send))
        await self._started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._lifespan.put({"type": "lifespan.shutdown"})
        await self._task

    def state(self) -> ServiceState:
        layer: Any = self.app
        while not isinstance(layer, FastPath):
            layer = layer.app
        return layer.state

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000), "state": {},
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        sent = False
        status, chunks = 0, []

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never: the body is read once
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


REQUESTS = [
    ("/reconstruct", {"inputs": DIGITS[:1].tolist()}),
    ("/reconstruct", {"inputs": DIGITS[1:4].tolist()}),
    ("/anomaly-score", {"inputs": DIGITS[4:5].tolist()}),
    ("/anomaly-score", {"inputs": DIGITS[5:7].tolist(), "per_feature": True}),
    ("/anomaly-score", {"inputs": DIGITS[7:8].tolist()}),
    ("/encode", {"inputs": DIGITS[8:9].tolist()}),
    ("/encode", {"inputs": DIGITS[9:10].tolist(), "sample": True, "seed": 5}),  # never merged
    ("/models/cancer-vae/reconstruct", {"inputs": [[3e38] * 30]}),  # overflows: 422
    ("/models/cancer-vae/reconstruct", {"inputs": [[1.0] * 30]}),  # its group's other request
    ("/reconstruct", {"inputs": DIGITS[10:11].tolist()}),
    ("/decode", {"latents": [[0.1] * 8]}),
    ("/decode", {"latents": [[-0.2] * 8, [0.3] * 8]}),
]


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "alone"])
def test_concurrent_requests_get_the_answers_they_get_one_at_a_time(
    settings: ServiceSettings, coalesce: bool
) -> None:
    app = create_app(settings.model_copy(update={"coalesce_inline_calls": coalesce}))
    bodies = [(path, orjson.dumps(body)) for path, body in REQUESTS * 3]

    async def main() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], int]:
        async with RunningApp(app) as running:
            alone = [await running.post(path, body) for path, body in bodies]
            coalescer = running.state().inference.coalescer  # type: ignore[union-attr]
            calls_before = coalescer.calls if coalescer is not None else 0
            together = await asyncio.gather(*(running.post(p, b) for p, b in bodies))
            calls = (coalescer.calls if coalescer is not None else 0) - calls_before
            return alone, list(together), calls

    alone, together, calls = asyncio.run(main())
    assert together == alone  # status and bytes, request by request
    assert [status for status, _ in alone[: len(REQUESTS)]] == [200] * 7 + [422] + [200] * 4
    if coalesce:
        # 36 requests, 33 of them mergeable in one turn: reconstruct (several groups: the
        # bound is 4096 numbers), score (default and per-feature), encode, decode, and the
        # tabular model's, whose merged call overflowed and ran again one request at a time.
        assert 0 < calls < len(bodies) - 3


def test_a_merge_that_fails_outside_the_model_leaves_no_request_waiting(
    served: ServedModel,
) -> None:
    def broken_metrics(size: int) -> None:
        raise RuntimeError("a bug in whatever counts batches")

    coalescer = Coalescer(_direct, max_values=10_000, on_batch=broken_metrics)

    def compute(x: np.ndarray) -> ReconstructResult:
        return served.reconstruct(x, samples=None, seed=None)

    items = [served.check_inputs(DIGITS[i : i + 1]) for i in range(3)]
    answered = _together(coalescer, [("k", x, compute) for x in items])
    for x, (result, ticket) in zip(items, answered, strict=True):
        np.testing.assert_array_equal(result.outputs, compute(x).outputs)
        assert ticket.size == 1
