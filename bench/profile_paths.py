"""Where a request's time goes, in-process: each stage of a JSON `/reconstruct` timed alone,
next to the whole app and a pyinstrument profile.

    .venv/bin/python -m bench.profile_paths

For make bench's two models (64 and 784 inputs), single items and batches of 64: the whole app
through ASGI (`bench.asgi_cost`: the request record, log line and metrics, the fast path, the
data plane), `serve_operation` alone (the data plane), and the stages it is made of: decoding
the body (`codecs.wire.decode_request`, of which `orjson.loads`), the model call (of which the
one onnxruntime call of the mean path) and encoding the answer. What the HTTP protocol costs
(uvicorn's httptools parser under our limits, the one-write answer) is measured by
`bench.protocol_cost` (bench/HOSTILE.md). Writes bench/PROFILE.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import numpy as np
import orjson
from pyinstrument import Profiler

from bench import asgi_cost
from bench.bodies import write_bodies
from bench.models import BenchModel, load_model
from bench.shared import ROOT, per_call_us
from service.codecs import wire
from service.dataplane.inference import Inference
from service.dataplane.operations import RequestHead, plan, serve_operation
from service.dataplane.state import ServiceState
from service.models.repository import ModelRepository
from service.settings import ServiceSettings

OUT = ROOT / "bench" / "out" / "profile"
TIMING_S = 1.5  # per figure


def stage_table(state: ServiceState, body: bytes, label: str, whole_app: float | None) -> list[str]:
    """Each stage of one request body, timed alone, and the data plane around them."""
    served = state.repository.resolve(None, None)  # type: ignore[union-attr]
    settings = state.settings
    head = RequestHead("application/json", "application/json", {}, str(len(body)))
    raw = wire.RawRequest("application/json", "application/json", {}, body)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def serve_many(count: int) -> None:
        for _ in range(count):
            await serve_operation(state, "reconstruct", None, None, head, receive)

    request = wire.decode_request(served, "reconstruct", raw, settings, "json")
    work = plan(served, request)
    result = work.compute(work.items)
    batch = np.ascontiguousarray(work.items)
    stages: dict[str, Callable[[], object]] = {
        "decode the body (codecs.wire.decode_request)": lambda: wire.decode_request(
            served, "reconstruct", raw, settings, "json"
        ),
        "  of which orjson.loads": lambda: orjson.loads(body),
        "check and plan (dataplane.operations.plan)": lambda: plan(served, request),
        "the model call (ServedModel.reconstruct)": lambda: work.compute(work.items),
        "  of which onnxruntime: the mean path, one call": lambda: served.bundle.run_mean_path(
            batch
        ),
        "encode the answer (codecs.wire.encode_result)": lambda: wire.encode_result(
            result, served, "reconstruct", "json", {}
        ),
    }
    count = 200 if len(body) < 100_000 else 20
    data_plane = per_call_us(lambda: asyncio.run(serve_many(count)), TIMING_S) / count
    lines = [
        f"### {label} ({len(body):,} bytes of JSON)",
        "",
        "| stage | us per call |",
        "|---|--:|",
    ]
    if whole_app is not None:
        lines.append(f"| whole app through ASGI (bench.asgi_cost) | {whole_app:,.1f} |")
        lines.append(
            "|   of which the ASGI layers: request record, log line, metrics, fast path "
            f"| {whole_app - data_plane:,.1f} |"
        )
    lines.append(f"| the data plane (serve_operation) | {data_plane:,.1f} |")
    lines += [
        f"| {name} | {per_call_us(function, TIMING_S):,.1f} |" for name, function in stages.items()
    ]
    return [*lines, ""]


def profile_text(state: ServiceState, body: bytes, count: int) -> str:
    head = RequestHead("application/json", "application/json", {}, str(len(body)))

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def serve_many() -> None:
        for _ in range(count):
            await serve_operation(state, "reconstruct", None, None, head, receive)

    profiler = Profiler(interval=0.0002)
    profiler.start()
    asyncio.run(serve_many())
    profiler.stop()
    return str(profiler.output_text(unicode=False, color=False, show_all=False).strip())


def model_section(model: BenchModel) -> list[str]:
    bodies = write_bodies(model.rows, OUT / model.key / "bodies", 64)
    settings = ServiceSettings(model_repository=model.repository, log_level="warning")
    repository = ModelRepository.load(settings)
    state = ServiceState(settings, repository, Inference(settings), ready=True)
    measured = asyncio.run(asgi_cost.measure(3, 2000, model.key))
    whole_single = min(next(rounds for label, rounds in measured if label.startswith("S1")))
    lines = [f"## Model `{model.key}` ({model.features} inputs)", ""]
    lines += stage_table(state, bodies["json1"].read(), "single item", whole_single)
    lines += stage_table(state, bodies["json64"].read(), "batch of 64", None)
    lines += [
        "pyinstrument, single items through `serve_operation`:",
        "",
        "```",
        profile_text(state, bodies["json1"].read(), 2000),
        "```",
        "",
    ]
    state.inference.close()  # type: ignore[union-attr]
    return lines


def main() -> int:
    sections = [
        "# Where the time goes",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Command: "
        "`.venv/bin/python -m bench.profile_paths`. In-process, no HTTP server, one thread; "
        "each stage timed alone on the same body. The HTTP protocol's own cost per request "
        "is in bench/HOSTILE.md (`bench.protocol_cost`).",
        "",
    ]
    for key in ("default", "784"):
        sections += model_section(load_model(key))
    (ROOT / "bench" / "PROFILE.md").write_text("\n".join(sections) + "\n")
    print("\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
