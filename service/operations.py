"""The array routes, independent of the web framework: raw request in, raw response out.

Both transports call `serve_operation`: the ASGI fast path (`service.fastpath`, the hot path)
and the FastAPI routes (which also carry the OpenAPI documentation). Work runs off the event
loop on the `Inference` executor (onnxruntime releases the GIL), optionally through the dynamic
batcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service import codecs, images
from service.admission import AdmissionControl
from service.batching import BatchTicket, DynamicBatcher
from service.errors import (
    InvalidInput,
    MalformedBody,
    NotAcceptable,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimedOut,
    ServiceError,
)
from service.metrics import ServiceMetrics
from service.repository import ModelRepository
from service.request_context import current_request
from service.runtime import ServedModel, check_seed
from service.settings import ServiceSettings

FloatArray = npt.NDArray[np.float32]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class ParsedRequest:
    """The body's array and scalar parameters, whichever wire format carried them.

    JSON bodies carry everything in one object; npy bodies carry the array and the scalars come
    from the query string.
    """

    def __init__(self, array: FloatArray | None, params: Mapping[str, Any], from_query: bool):
        self.array = array
        self.params = params
        self.from_query = from_query

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.params.get(name)
        if value is None:
            return default
        if self.from_query and isinstance(value, str):
            try:
                return int(value)
            except ValueError as error:
                raise InvalidInput(
                    f"{name}: expected an integer, got {value!r}", {"field": name}
                ) from error
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name}: expected an integer, got {value!r}", {"field": name})
        return value

    def number(self, name: str, default: float) -> float:
        value = self.params.get(name)
        if value is None:
            return default
        if self.from_query and isinstance(value, str):
            try:
                return float(value)
            except ValueError as error:
                raise InvalidInput(
                    f"{name}: expected a number, got {value!r}", {"field": name}
                ) from error
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{name}: expected a number, got {value!r}", {"field": name})
        return float(value)

    def flag(self, name: str) -> bool:
        value = self.params.get(name, False)
        if self.from_query and isinstance(value, str):
            return codecs.parse_bool(value, name)
        if not isinstance(value, bool):
            raise InvalidInput(f"{name}: expected true or false, got {value!r}", {"field": name})
        return value

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{name}: expected a string, got {value!r}", {"field": name})
        return value


@dataclass(frozen=True)
class RawRequest:
    content_type: str | None
    accept: str | None
    query: Mapping[str, str]
    body: bytes


@dataclass
class RawResponse:
    status: int
    media_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The ASGI body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError as error:
            raise MalformedBody(f"Content-Length {content_length!r} is not a number") from error
        if declared > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes is above the limit of {limit} "
                "(VAE_MAX_BODY_BYTES)",
                {"limit": limit},
            )
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(
                f"request body is above the limit of {limit} bytes (VAE_MAX_BODY_BYTES)",
                {"limit": limit},
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_request(
    raw: RawRequest, settings: ServiceSettings, array_field: str | None
) -> ParsedRequest:
    body_format = codecs.request_format(raw.content_type)
    if body_format == "npy":
        if array_field is None:
            raise InvalidInput("this route takes a JSON body, not application/x-npy")
        return ParsedRequest(codecs.parse_npy(raw.body, array_field), raw.query, from_query=True)
    if not raw.body and array_field is None:
        # A body-less call (POST /sample?n=4&seed=1) takes its parameters from the query.
        return ParsedRequest(None, raw.query, from_query=True)
    payload = codecs.parse_json_object(raw.body, max_depth=settings.max_json_depth)
    array = codecs.array_field(payload, array_field) if array_field else None
    return ParsedRequest(array, payload, from_query=False)


def parse_operation_request(
    model: ServedModel,
    route: str,
    raw: RawRequest,
    settings: ServiceSettings,
    wanted: codecs.ResponseFormat,
) -> ParsedRequest:
    """`parse_request`, plus what image models add: PNG/JPEG and multipart bodies (scalars in
    the query string, as with npy), and the per-pixel errors a heat map is drawn from."""
    if codecs.media_type(raw.content_type).startswith(("image/", "multipart/")):
        array = images.decode_image_request(
            raw.content_type or "",
            raw.body,
            model,
            route,
            max_pixels=settings.max_image_pixels,
            max_items=settings.max_batch_size,
        )
        parsed = ParsedRequest(array, raw.query, from_query=True)
    else:
        parsed = parse_request(raw, settings, ARRAY_FIELD[route])
    if wanted == "png" and route == "anomaly-score":
        params = {**parsed.params, "per_feature": True}
        parsed = ParsedRequest(parsed.array, params, parsed.from_query)
    return parsed


def negotiate(model: ServedModel, route: str, accept: str | None) -> codecs.ResponseFormat:
    """The response format for this route and model: PNG only where images can be drawn.

    Only a range naming image/png or image/* can pick PNG, so every other Accept header takes
    exactly the path it always took (the same format, the same 406)."""
    if accept is None or "image/" not in accept.lower():
        return codecs.response_format(accept)
    with_png: tuple[codecs.ResponseFormat, ...] = (*codecs.ARRAY_FORMATS, "png")
    try:
        if route not in images.PNG_OUTPUT_ROUTES:
            raise images.ImagesUnavailable(
                f"/{route} sends arrays only; PNG comes from "
                + ", ".join(f"/{name}" for name in images.PNG_OUTPUT_ROUTES)
            )
        images.image_spec(model)
    except images.ImagesUnavailable as why:
        try:
            return codecs.response_format(accept)
        except NotAcceptable:
            if codecs.response_format(accept, with_png) != "png":
                raise
            available = [codecs.JSON_MEDIA_TYPE, codecs.NPY_MEDIA_TYPE, codecs.NPZ_MEDIA_TYPE]
            raise NotAcceptable(
                f"cannot send {codecs.PNG_MEDIA_TYPE}: {why}; available: {', '.join(available)}",
                {"accept": accept, "available": available},
            ) from None
    return codecs.response_format(accept, with_png)


PRIMARY_FIELD = {
    "encode": "mu",
    "decode": "outputs",
    "reconstruct": "outputs",
    "sample": "outputs",
    "anomaly-score": "scores",
}


def render(
    result: dict[str, Any],
    raw: RawRequest,
    route: str,
    wanted: codecs.ResponseFormat,
    served: ServedModel | None = None,
) -> RawResponse:
    """JSON by default; `Accept: application/x-npy` sends one array (the route's main one, or
    `?output=NAME`) with the scalars as X-* headers; `application/x-npz` sends every array;
    `image/png` (image models, `negotiate`) a grid of images or heat maps of `served`."""
    if wanted == "json":
        return RawResponse(200, codecs.JSON_MEDIA_TYPE, codecs.json_bytes(result))
    arrays = {k: np.asarray(v) for k, v in result.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
    model = scalars.pop("model", {})
    headers = {f"X-{key.replace('_', '-').title()}": str(value) for key, value in scalars.items()}
    headers.update(
        {"X-Model-Name": model.get("name", ""), "X-Model-Version": model.get("version", "")}
    )
    if wanted == "png":
        assert served is not None, "a PNG is drawn with the model's image description"
        body, image_headers = images.png_response(arrays, route, images.image_spec(served))
        headers.update(image_headers)
        return RawResponse(200, codecs.PNG_MEDIA_TYPE, body, headers)
    if wanted == "npz":
        return RawResponse(200, codecs.NPZ_MEDIA_TYPE, codecs.npz_bytes(arrays), headers)
    name = raw.query.get("output", PRIMARY_FIELD[route])
    if name not in arrays:
        raise InvalidInput(
            f"output: {name!r} is not an array of this response; choose from {sorted(arrays)}",
            {"field": "output", "allowed": sorted(arrays)},
        )
    headers["X-Output"] = name
    return RawResponse(200, codecs.NPY_MEDIA_TYPE, codecs.npy_bytes(arrays[name]), headers)


def error_response(error: ServiceError) -> RawResponse:
    return RawResponse(
        error.status, codecs.JSON_MEDIA_TYPE, codecs.json_bytes(error.body()), error.headers
    )


# --- the operations, one per route ---------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How to run one request: alone, or merged with others into one onnxruntime batch.

    `batch_key` names requests that may share a batch (same model, route and parameters);
    `items` is the request's array in the model's canonical layout, `layout` the layout the
    client sent, and `reshaped` the result fields that must come back in that layout.
    """

    compute: Callable[[FloatArray], dict[str, Any]]
    items: FloatArray
    layout: tuple[int, ...]
    batch_key: tuple[Any, ...] | None
    reshaped: tuple[str, ...] = ()
    values: int = 0  # numbers the model touches (items x features): the size of the work


def plan(model: ServedModel, route: str, req: ParsedRequest) -> Plan:
    """Validate the request and decide how it runs. Only operations whose result for an item
    depends on that item alone may be batched: no seeded sampling."""
    if route == "sample":
        n = req.integer("n", 1)
        assert n is not None
        seed, temperature = req.integer("seed"), req.number("temperature", 1.0)
        return Plan(
            lambda _: model.sample(n=n, seed=seed, temperature=temperature),
            np.zeros((0,), np.float32),
            (),
            None,
            values=max(n, 0) * model.feature_count,
        )
    assert req.array is not None
    x = req.array
    key_base = (id(model), route)
    values = len(x) * model.feature_count
    if route == "decode":
        z = model.check_latents(x)
        return Plan(model.decode, z, tuple(z.shape[1:]), key_base, values=values)
    layout = tuple(x.shape[1:])
    items = model.check_inputs(x)
    if route == "encode":
        sample, seed = req.flag("sample"), check_seed(req.integer("seed"))
        if sample:
            return Plan(
                lambda v: model.encode(v, sample=True, seed=seed), items, layout, None, (), values
            )
        return Plan(
            lambda v: model.encode(v, sample=False, seed=None), items, layout, key_base, (), values
        )
    if route == "reconstruct":
        samples, seed = req.integer("samples"), check_seed(req.integer("seed"))
        key = key_base if samples is None else None
        return Plan(
            lambda v: model.reconstruct(v, samples=samples, seed=seed),
            items,
            layout,
            key,
            ("outputs",),
            values * (samples or 1),
        )
    if route == "anomaly-score":
        score_type, per_feature = req.text("score_type"), req.flag("per_feature")
        return Plan(
            lambda v: model.score(v, score_type=score_type, per_feature=per_feature),
            items,
            layout,
            (*key_base, score_type, per_feature),
            ("feature_errors",),
            values * (model.manifest.anomaly.elbo_samples if score_type == "neg_elbo" else 1),
        )
    raise InvalidInput(f"unknown operation {route!r}")


ARRAY_FIELD: dict[str, str | None] = {
    "encode": "inputs",
    "decode": "latents",
    "reconstruct": "inputs",
    "sample": None,
    "anomaly-score": "inputs",
}


class Inference:
    """Where model work runs: inline, a small thread pool, or the batcher when batching is on;
    behind admission control (bounded running and queued calls) and the request timeout."""

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

    async def run(self, work: Plan) -> dict[str, Any]:
        """The plan's result; its queue wait, model time and batch go to the current request's
        record (metrics and the log line)."""
        record = current_request()
        entered = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        if not self.admission.try_acquire():
            try:
                await asyncio.wait_for(self.admission.acquire(), self.timeout)
            except TimeoutError:
                raise self._timed_out("waiting for a free model slot") from None
            except Overloaded:
                if self.metrics is not None:
                    self.metrics.overloaded.inc()
                raise
        pending: asyncio.Future[dict[str, Any]] | None = None
        ticket: BatchTicket | None = None
        call: _TimedCall | None = None
        try:
            if self.batcher is not None and work.batch_key is not None:
                ticket = BatchTicket()
                pending = asyncio.ensure_future(
                    self.batcher.run(work.batch_key, work.items, work.compute, ticket)
                )
            elif work.values <= self.inline_max_values:
                # Measured: handing a call to a thread and back costs ~200 us here, more than
                # a small model call itself; the loop is held no longer than JSON parsing
                # holds it.
                began = time.perf_counter()
                result = work.compute(work.items)
                record.queue_s = began - entered
                record.inference_s = time.perf_counter() - began
            else:
                call = _TimedCall(work.compute)
                pending = loop.run_in_executor(self.executor, call, work.items)
            if pending is not None:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                # shield: on timeout the call goes on in its thread (it cannot be stopped), and
                # keeps its slot until it ends, so the concurrency bound stays true.
                result = await asyncio.wait_for(asyncio.shield(pending), remaining)
                if ticket is not None:
                    record.queue_s = ticket.started - entered
                    record.inference_s = ticket.seconds
                    record.batch_size = ticket.size
                elif call is not None:
                    record.queue_s = call.started - entered
                    record.inference_s = call.seconds
        except TimeoutError:
            assert pending is not None
            pending.add_done_callback(self._release_after)
            raise self._timed_out("running the model") from None
        except BaseException:
            self.admission.release()
            raise
        self.admission.release()
        for name in work.reshaped:
            if name in result:
                result[name] = result[name].reshape((len(work.items), *work.layout))
        return result

    def _release_after(self, finished: asyncio.Future[dict[str, Any]]) -> None:
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

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)


class _TimedCall:
    """A model call run in the executor, stamped in its thread: the wait for a free thread is
    queueing, not model time."""

    __slots__ = ("compute", "seconds", "started")

    def __init__(self, compute: Callable[[FloatArray], dict[str, Any]]):
        self.compute = compute
        self.started = 0.0
        self.seconds = 0.0

    def __call__(self, items: FloatArray) -> dict[str, Any]:
        self.started = time.perf_counter()
        try:
            return self.compute(items)
        finally:
            self.seconds = time.perf_counter() - self.started


@dataclass
class ServiceState:
    settings: ServiceSettings
    repository: ModelRepository | None = None
    inference: Inference | None = None
    ready: bool = False
    metrics: ServiceMetrics | None = None  # None: VAE_METRICS=false

    def require_ready(self) -> tuple[ModelRepository, Inference]:
        if self.repository is None or self.inference is None or not self.ready:
            raise NotReady("models are still loading", headers={"Retry-After": "1"})
        return self.repository, self.inference


async def serve_operation(
    state: ServiceState, route: str, name: str | None, version: str | None, raw: RawRequest
) -> RawResponse:
    """One array request, from raw bytes to raw bytes; errors come back as error responses.
    What it learns (model, items, anomalies, codec times) goes to the request's record."""
    record = current_request()
    try:
        repository, inference = state.require_ready()
        model = repository.resolve(name, version)
        record.served_by(model.name, model.version)
        # Negotiate before any work: a 406 should not cost an onnxruntime call.
        wanted = negotiate(model, route, raw.accept)
        began = time.perf_counter()
        parsed = parse_operation_request(model, route, raw, state.settings, wanted)
        record.decode_s = time.perf_counter() - began
        result = await inference.run(plan(model, route, parsed))
        result.setdefault("model", {"name": model.name, "version": model.version})
        # Read with .get: bookkeeping must never turn an answer into a 500.
        primary, flags = result.get(PRIMARY_FIELD[route]), result.get("is_anomaly")
        record.items = None if primary is None else len(primary)
        if flags is not None:
            record.anomalies = int(np.count_nonzero(flags))
        began = time.perf_counter()
        response = render(result, raw, route, wanted, model)
        record.encode_s = time.perf_counter() - began
        return response
    except ServiceError as error:
        return error_response(error)
