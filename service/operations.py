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
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from service import codecs, images, json_body
from service.admission import AdmissionControl
from service.batching import BatchTicket, DynamicBatcher
from service.body import BodyBudget, BodyReader, array_body_limit, body_format
from service.errors import (
    InvalidInput,
    NotAcceptable,
    NotReady,
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    RequestTimedOut,
    ServiceError,
    excerpt,
)
from service.memory import TRIM_AFTER_BYTES, MemoryReturn
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
                    f"{name}: expected an integer, got {excerpt(value)}", {"field": name}
                ) from error
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(
                f"{name}: expected an integer, got {excerpt(value)}", {"field": name}
            )
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
                    f"{name}: expected a number, got {excerpt(value)}", {"field": name}
                ) from error
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{name}: expected a number, got {excerpt(value)}", {"field": name})
        return float(value)

    def flag(self, name: str) -> bool:
        value = self.params.get(name, False)
        if self.from_query and isinstance(value, str):
            return codecs.parse_bool(value, name)
        if not isinstance(value, bool):
            raise InvalidInput(
                f"{name}: expected true or false, got {excerpt(value)}", {"field": name}
            )
        return value

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{name}: expected a string, got {excerpt(value)}", {"field": name})
        return value


class RequestHead(NamedTuple):
    """What a transport knows of an array request before its body is read. (Tuples: made for
    every request, a frozen dataclass cost ~1 us more each.)"""

    content_type: str | None
    accept: str | None
    query: Mapping[str, str]
    content_length: str | None


class RawRequest(NamedTuple):
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


def route_body_limit(
    settings: ServiceSettings, model: ServedModel, route: str, content_type: str | None
) -> int:
    """The largest body this route of this model can need (service.body), within
    VAE_MAX_BODY_BYTES."""
    fmt = body_format(content_type)
    if route == "sample":
        numbers, fmt = 0, "json"  # parameters only
    elif route == "decode":
        numbers = settings.max_batch_size * model.latent_dim
    else:
        numbers = settings.max_batch_size * model.feature_count
    derived = array_body_limit(numbers, fmt, settings.max_image_pixels)
    return min(settings.max_body_bytes, derived)


# Bodies above these are decoded in the executor, under admission control, so no body holds
# the event loop longer than a thread handoff would (~200 us, bench/RESULTS.md): 64 kB of
# JSON takes about that long to parse, 1 MiB of npy (a copy and a finiteness check) no
# longer. Images are always decoded there.
INLINE_DECODE_BYTES = 64 * 1024
INLINE_NPY_BYTES = 1024 * 1024


def decodes_inline(raw: RawRequest) -> bool:
    size = len(raw.body)
    if size <= INLINE_DECODE_BYTES:
        content_type = raw.content_type
        if content_type is None or content_type.startswith("application/"):
            return True  # JSON and npy, as clients spell them: no parsing of the header
        return not codecs.media_type(content_type).startswith(("image/", "multipart/"))
    return size <= INLINE_NPY_BYTES and codecs.media_type(raw.content_type) == codecs.NPY_MEDIA_TYPE


def parse_request(
    raw: RawRequest,
    settings: ServiceSettings,
    array_field: str | None,
    item_values: int | None = None,
) -> ParsedRequest:
    """The body's array and parameters. `item_values`: the numbers one item holds, so a JSON
    array with more is refused before it is parsed."""
    if codecs.request_format(raw.content_type) == "npy":
        if array_field is None:
            raise InvalidInput("this route takes a JSON body, not application/x-npy")
        return ParsedRequest(codecs.parse_npy(raw.body, array_field), raw.query, from_query=True)
    if not raw.body and array_field is None:
        # A body-less call (POST /sample?n=4&seed=1) takes its parameters from the query.
        return ParsedRequest(None, raw.query, from_query=True)
    payload = json_body.parse_json_object(raw.body, max_depth=settings.max_json_depth)
    array = (
        json_body.array_field(
            payload,
            array_field,
            max_items=settings.max_batch_size,
            max_item_values=item_values,
        )
        if array_field
        else None
    )
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
        item_values = model.latent_dim if route == "decode" else model.feature_count
        parsed = parse_request(raw, settings, ARRAY_FIELD[route], item_values)
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
            f"output: {excerpt(name)} is not an array of this response; choose from "
            f"{sorted(arrays)}",
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

    async def run(self, decode: Callable[[], Plan], *, inline: bool = True) -> dict[str, Any]:
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
            self.admission.release()
            raise
        self.admission.release()
        for name in work.reshaped:
            if name in result:
                result[name] = result[name].reshape((len(work.items), *work.layout))
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

    def finished(self, reader: BodyReader | None, answer: RawResponse | None) -> None:
        """A request is answered: its body leaves the budget, and a large one's memory goes
        back to the system (service.memory)."""
        if reader is None:
            return
        reader.release()
        size = max(reader.received, 0 if answer is None else len(answer.body))
        if size >= TRIM_AFTER_BYTES:
            self.memory.after(size)

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


def _compute(compute: Callable[[FloatArray], dict[str, Any]], items: FloatArray) -> dict[str, Any]:
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


@dataclass
class ServiceState:
    settings: ServiceSettings
    repository: ModelRepository | None = None
    inference: Inference | None = None
    ready: bool = False
    metrics: ServiceMetrics | None = None  # None: VAE_METRICS=false
    readiness_details_open: bool = False  # /readyz gives refusal reasons without a key
    # route_body_limit, memoised: the same few (model, route, Content-Type) come again and
    # again. Holding the model keeps its identity unique; short Content-Types only, and
    # emptied when it reaches 256 entries (bounded by bytes like service.codecs' caches).
    _body_limits: dict[tuple[ServedModel, str, str | None], int] = field(default_factory=dict)

    def body_limit(self, model: ServedModel, route: str, content_type: str | None) -> int:
        key = (model, route, content_type)
        limit = self._body_limits.get(key)
        if limit is None:
            limit = route_body_limit(self.settings, model, route, content_type)
            if content_type is None or len(content_type) <= codecs.CACHEABLE_BYTES:
                if len(self._body_limits) >= 256:
                    self._body_limits.clear()
                self._body_limits[key] = limit
        return limit

    def require_ready(self) -> tuple[ModelRepository, Inference]:
        if self.repository is None or self.inference is None or not self.ready:
            raise NotReady("models are still loading", headers={"Retry-After": "1"})
        return self.repository, self.inference


async def serve_operation(
    state: ServiceState,
    route: str,
    name: str | None,
    version: str | None,
    head: RequestHead,
    receive: Receive,
) -> RawResponse:
    """One array request, from its head and body to raw bytes; errors come back as error
    responses. The model is resolved and the response format agreed before the body is read,
    so the body's limit is the model's (`route_body_limit`) and a 404 or 406 costs no read.
    What it learns (model, items, anomalies, codec times) goes to the request's record."""
    record = current_request()
    reader: BodyReader | None = None
    response: RawResponse | None = None
    inference: Inference | None = None
    try:
        repository, inference = state.require_ready()
        model = repository.resolve(name, version)
        record.served_by(model.name, model.version)
        wanted = negotiate(model, route, head.accept)
        reader = inference.body_reader(receive, head.content_length)
        body = await reader.read(state.body_limit(model, route, head.content_type))
        raw = RawRequest(head.content_type, head.accept, head.query, body)

        def decode() -> Plan:
            parsed = parse_operation_request(model, route, raw, state.settings, wanted)
            return plan(model, route, parsed)

        result = await inference.run(decode, inline=decodes_inline(raw))
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
    except MemoryError:
        return error_response(
            OutOfMemory(
                "the worker ran out of memory answering; retry later",
                headers={"Retry-After": "1"},
            )
        )
    finally:
        if inference is not None:
            inference.finished(reader, response)
