"""What the whole app costs per request, in-process: no sockets, no HTTP parsing, no load
generator sharing the cores, so a few microseconds show where `make bench` cannot see them.

    .venv/bin/python -m bench.asgi_cost [--rounds 5] [--requests 5000] [--model default|784]

The app `vae-serve` builds (`create_app`, on the default bundle of `bench/models/repo-default`
or make bench's 784-input model) gets make bench's S1 body (one item as JSON, `/reconstruct`),
the same item to `/anomaly-score` (what monitoring records), and S3 body (64 items as npy)
through ASGI, as uvicorn would hand them over, one request at a time; the figure is CPU time
per request (`time.process_time`), each round's and the best. To measure another checkout OTHER
(its service/ and bench/), run `PYTHONPATH=OTHER .venv/bin/python bench/asgi_cost.py` from this
one; the first line printed names the file the app came from, so a mixed-up path shows.

`--monitoring-pairs` measures what monitoring costs a single-item `/anomaly-score`: rounds with
the monitors detached and attached in turn, in one process; `--monitoring-interleaved` the same
request by request (bench/MONITORING.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from bench.bodies import JSON, NPY, json_inputs, npy_bytes
from bench.models import load_model
from service.asgi import Message, Scope

Runner = Callable[[], Awaitable[None]]


def _scope(path: str, content_type: str, body: bytes) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", content_type.encode()),
            (b"accept", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def _runner(app: Any, label: str, path: str, content_type: str, body: bytes) -> Runner:
    """One request of a case through the app, as uvicorn hands it over; raises unless 200."""
    scope = _scope(path, content_type, body)

    async def one() -> None:
        delivered = False
        status = 0

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # never: the app reads the body once
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"{label}: status {status}")

    return one


async def _cpu_us_per_request(one: Runner, requests: int) -> float:
    began = time.process_time()
    for _ in range(requests):
        await one()
    return (time.process_time() - began) / requests * 1e6


@contextlib.asynccontextmanager
async def running_app(model: str) -> AsyncIterator[tuple[Any, Any]]:
    """The app `vae-serve` builds on a bench model, its lifespan started; (app, rows)."""
    bench_model = load_model(model)
    os.environ["VAE_MODEL_REPOSITORY"] = str(bench_model.repository)
    os.environ.setdefault("VAE_LOG_LEVEL", "warning")
    # Imported after the environment names the repository; trees from before issue 20 kept the
    # app in service.app.
    try:
        from service.api.app import create_app
    except ImportError:
        from service.app import create_app  # type: ignore[import-not-found,no-redef]
    import inspect

    from service.settings import ServiceSettings

    print(f"app from {inspect.getfile(create_app)}", flush=True)  # which tree ran
    app = create_app(ServiceSettings())
    started = asyncio.Event()
    lifespan: asyncio.Queue[Message] = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})

    async def lifespan_send(message: Message) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    lifespan_scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(lifespan_scope, lifespan.get, lifespan_send))
    await started.wait()
    try:
        yield app, bench_model.rows
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        await task


async def measure(rounds: int, requests: int, model: str) -> list[tuple[str, list[float]]]:
    async with running_app(model) as (app, rows):
        cases = [
            ("S1 single-item JSON /reconstruct", "/reconstruct", JSON, json_inputs(rows[:1])),
            ("single-item JSON /anomaly-score", "/anomaly-score", JSON, json_inputs(rows[:1])),
            ("S3 batch-64 npy /reconstruct", "/reconstruct", NPY, npy_bytes(rows[:64])),
        ]
        figures = []
        for label, path, content_type, body in cases:
            one = _runner(app, label, path, content_type, body)
            for _ in range(requests // 2):  # warm-up
                await one()
            per_round = [await _cpu_us_per_request(one, requests) for _ in range(rounds)]
            figures.append((label, per_round))
    return figures


@contextlib.asynccontextmanager
async def monitored_app(
    model: str, requests: int
) -> AsyncIterator[tuple[Runner, Callable[[bool], None], Callable[[], None]]]:
    """The app with single-item /anomaly-score warmed up: (one request, attach(bool),
    write_kept()), the models' monitors attached or detached as VAE_MONITORING=false leaves
    them on the request path (`model.monitor` is None), and what the app's timer does
    (service.dataplane.monitor_flush: each attached monitor writes what it kept); attached
    again at the end."""
    async with running_app(model) as (app, rows):
        inner = app
        while not hasattr(inner, "state"):  # the layers around the app keep the next in .app
            inner = inner.app
        # The fast path holds the ServiceState itself; FastAPI keeps it as state.service.
        repository = getattr(inner.state, "service", inner.state).repository
        monitors = {id(m): m.monitor for m in repository}
        if not any(monitors.values()):
            raise SystemExit("monitoring is off (VAE_MONITORING=false): nothing to compare")

        def attach(attached: bool) -> None:
            for served in repository:
                served.monitor = monitors[id(served)] if attached else None

        def write_kept() -> None:
            for served in repository:
                if served.monitor is not None:
                    served.monitor.flush()

        one = _runner(app, "anomaly-score", "/anomaly-score", JSON, json_inputs(rows[:1]))
        for _ in range(requests // 2):  # warm-up
            await one()
        try:
            yield one, attach, write_kept
        finally:
            attach(True)


async def monitoring_pairs(rounds: int, requests: int, model: str) -> list[tuple[float, float]]:
    """Single-item /anomaly-score with the models' monitors attached and detached, round by
    round in one process: (off, on) CPU us per request for each pair. Alternating in one
    process keeps the machine's drift, which moves whole processes by 10 us, out of the
    difference."""
    async with monitored_app(model, requests) as (one, attach, _):
        pairs = []
        for _ in range(rounds):
            figures = []
            for attached in (False, True):
                attach(attached)
                figures.append(await _cpu_us_per_request(one, requests))
            pairs.append((figures[0], figures[1]))
    return pairs


async def monitoring_interleaved(
    rounds: int, requests: int, model: str
) -> list[tuple[float, float]]:
    """The same comparison request by request: the monitors attached for every other request,
    each request's CPU time charged to its side. The machine's drift falls on both sides
    alike, so the figure is tight (+-0.5 us over 20 rounds of 2,000 where the pairs give
    +-2); what monitoring does to the cache of the requests around it is shared between the
    sides, so this is its own cost, and `monitoring_pairs` the cost to a server that
    monitors every request (bench/MONITORING.md has both)."""
    async with monitored_app(model, requests) as (one, attach, _):
        clock = time.process_time_ns
        pairs = []
        for round_number in range(rounds):
            spent = [0, 0]
            for i in range(2 * requests):
                attached = (i + round_number) % 2
                attach(bool(attached))
                began = clock()
                await one()
                spent[attached] += clock() - began
            pairs.append((spent[0] / requests / 1e3, spent[1] / requests / 1e3))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--model", default="default", choices=("default", "784"))
    parser.add_argument(
        "--monitoring-pairs",
        action="store_true",
        help="single-item /anomaly-score only, monitors detached and attached in turn",
    )
    parser.add_argument(
        "--monitoring-interleaved",
        action="store_true",
        help="as --monitoring-pairs, attached and detached request by request",
    )
    options = parser.parse_args(argv)
    if options.monitoring_pairs or options.monitoring_interleaved:
        compare = monitoring_interleaved if options.monitoring_interleaved else monitoring_pairs
        pairs = asyncio.run(compare(options.rounds, options.requests, options.model))
        for off, on in pairs:
            print(f"off {off:.1f} us, on {on:.1f} us: {on - off:+.1f} us")
        differences = sorted(on - off for off, on in pairs)
        median = differences[len(differences) // 2]
        mean = statistics.fmean(differences)
        spread = 1.96 * statistics.stdev(differences) / len(differences) ** 0.5
        print(
            f"median cost of monitoring: {median:+.1f} us per single-item request "
            f"(mean {mean:+.2f} +- {spread:.2f}, 95%)"
        )
        return 0
    measured = asyncio.run(measure(options.rounds, options.requests, options.model))
    for label, per_round in measured:
        rounds = " ".join(f"{us:.1f}" for us in per_round)
        print(f"{label}: {rounds} us per request (best {min(per_round):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
