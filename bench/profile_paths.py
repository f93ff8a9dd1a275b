"""Where a request's time goes, in-process: pyinstrument profiles of the JSON paths.

    .venv/bin/python -m bench.profile_paths

Profiles `serve_operation` (everything our service does for a request except the HTTP server
itself) on single-item and batch-64 JSON `/reconstruct` with the default model, next to the
onnxruntime calls alone, and writes `bench/PROFILE.md`. It explains the targets that
bench/RESULTS.md marks as out of reach.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import orjson
from pyinstrument import Profiler

from bench.bodies import write_bodies
from bench.models import load_model
from bench.shared import ROOT, per_call_us
from service.codecs import json_read, wire
from service.dataplane.inference import Inference
from service.dataplane.operations import RequestHead, serve_operation
from service.dataplane.state import ServiceState
from service.models.repository import ModelRepository
from service.models.served_model import ServedModel
from service.settings import ServiceSettings

OUT = ROOT / "bench" / "out" / "profile"
TIMING_S = 1.5  # per figure


def profile_one(
    state: ServiceState, served: ServedModel, body: bytes, label: str, small: bool
) -> list[str]:
    """A table of per-part costs and a pyinstrument profile for one request body."""
    head = RequestHead("application/json", "application/json", {}, str(len(body)))

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def serve_many(count: int) -> None:
        for _ in range(count):
            await serve_operation(state, "reconstruct", None, None, head, receive)

    x = json_read.array_field(json_read.parse_json_object(body), "inputs")
    assert x is not None
    model_x = served.model_input(x)
    result = served.reconstruct(x, samples=None, seed=None)
    parts: dict[str, Callable[[], object]] = {
        "orjson.loads of the body": lambda: orjson.loads(body),
        "JSON body -> float32 array (codecs.json_read)": lambda: json_read.array_field(
            json_read.parse_json_object(body), "inputs"
        ),
        "onnxruntime encoder + decoder": lambda: served.bundle.decode_model(
            served.bundle.encode_model(model_x).mu
        ),
        "reconstruct operation (model + preprocessing)": lambda: served.reconstruct(
            x, samples=None, seed=None
        ),
        "response -> JSON bytes": lambda: wire.encode_result(
            result, served, "reconstruct", "json", {}
        ),
    }
    whole = per_call_us(lambda: asyncio.run(serve_many(200)), TIMING_S) / 200
    lines = [f"## {label} ({len(body):,} bytes of JSON)", "", "| part | us per call |", "|---|---|"]
    lines.append(f"| whole request (serve_operation) | {whole:,.1f} |")
    lines += [
        f"| {name} | {per_call_us(function, TIMING_S):,.1f} |" for name, function in parts.items()
    ]
    profiler = Profiler(interval=0.0002)
    profiler.start()
    asyncio.run(serve_many(2000 if small else 300))
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False).strip()
    return [*lines, "", "```", text, "```", ""]


def main() -> int:
    model = load_model("default")
    bodies = write_bodies(model.rows, OUT / "bodies", 64)
    settings = ServiceSettings(model_repository=model.repository, log_level="warning")
    repository = ModelRepository.load(settings)
    served = repository.resolve(None, None)
    state = ServiceState(settings, repository, Inference(settings), ready=True)
    sections = [
        "# Where the time goes",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Command: "
        "`.venv/bin/python -m bench.profile_paths`. In-process, no HTTP server, one thread.",
        "",
    ]
    for key, label in (("json1", "single item"), ("json64", "batch of 64")):
        sections += profile_one(state, served, bodies[key].read(), label, key == "json1")
    (ROOT / "bench" / "PROFILE.md").write_text("\n".join(sections) + "\n")
    print("\n".join(sections))
    state.inference.close()  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
