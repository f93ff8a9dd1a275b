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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence

from bench.bodies import JSON, NPY, json_inputs, npy_bytes
from bench.models import load_model
from service.asgi import Message, Scope


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


async def measure(rounds: int, requests: int, model: str) -> list[tuple[str, list[float]]]:
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
    rows = bench_model.rows
    cases = [
        ("S1 single-item JSON /reconstruct", "/reconstruct", JSON, json_inputs(rows[:1])),
        ("single-item JSON /anomaly-score", "/anomaly-score", JSON, json_inputs(rows[:1])),
        ("S3 batch-64 npy /reconstruct", "/reconstruct", NPY, npy_bytes(rows[:64])),
    ]
    figures = []
    for label, path, content_type, body in cases:
        scope = _scope(path, content_type, body)

        async def one(scope: Scope = scope, body: bytes = body, label: str = label) -> None:
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

        for _ in range(requests // 2):  # warm-up
            await one()
        per_round = []
        for _ in range(rounds):
            began = time.process_time()
            for _ in range(requests):
                await one()
            per_round.append((time.process_time() - began) / requests * 1e6)
        figures.append((label, per_round))
    await lifespan.put({"type": "lifespan.shutdown"})
    await task
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--model", default="default", choices=("default", "784"))
    options = parser.parse_args(argv)
    measured = asyncio.run(measure(options.rounds, options.requests, options.model))
    for label, per_round in measured:
        rounds = " ".join(f"{us:.1f}" for us in per_round)
        print(f"{label}: {rounds} us per request (best {min(per_round):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
