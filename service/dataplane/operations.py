"""The array routes, independent of the web framework: raw request in, raw response out.

Both transports call `serve_operation`: the ASGI fast path (`service.api.fastpath`, the hot path)
and the FastAPI routes (which also carry the OpenAPI documentation). Work runs off the event
loop on the `Inference` executor (onnxruntime releases the GIL), optionally through the dynamic
batcher.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from bundle.arrays import FloatArray
from service.codecs import images, json_read, json_write, media, npy, params
from service.dataplane.body import BodyReader
from service.dataplane.inference import Inference, Plan
from service.dataplane.state import ServiceState
from service.errors import InvalidInput, NotAcceptable, OutOfMemory, excerpt
from service.models.served_model import ServedModel, check_seed
from service.observability.request_context import current_request
from service.settings import ServiceSettings

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
            return params.parse_bool(value, name)
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


@dataclass(frozen=True)
class Operation:
    """What the data plane needs to know of an operation beyond its code in `plan`."""

    array_field: str | None  # the request field that carries the batch; None: parameters only
    primary_field: str  # the result's main array: what an npy answer carries, items counted


# Every operation, in the order the API documents them (service.api.routes makes their routes).
OPERATIONS: dict[str, Operation] = {
    "encode": Operation("inputs", "mu"),
    "decode": Operation("latents", "outputs"),
    "reconstruct": Operation("inputs", "outputs"),
    "sample": Operation(None, "outputs"),
    "anomaly-score": Operation("inputs", "scores"),
}


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
        return not media.media_type(content_type).startswith(("image/", "multipart/"))
    return size <= INLINE_NPY_BYTES and media.media_type(raw.content_type) == media.NPY_MEDIA_TYPE


def parse_request(
    raw: RawRequest,
    settings: ServiceSettings,
    array_field: str | None,
    item_values: int | None = None,
) -> ParsedRequest:
    """The body's array and parameters. `item_values`: the numbers one item holds, so a JSON
    array with more is refused before it is parsed."""
    if media.request_format(raw.content_type) == "npy":
        if array_field is None:
            raise InvalidInput("this route takes a JSON body, not application/x-npy")
        return ParsedRequest(npy.parse_npy(raw.body, array_field), raw.query, from_query=True)
    if not raw.body and array_field is None:
        # A body-less call (POST /sample?n=4&seed=1) takes its parameters from the query.
        return ParsedRequest(None, raw.query, from_query=True)
    payload = json_read.parse_json_object(raw.body, max_depth=settings.max_json_depth)
    array = (
        json_read.array_field(
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
    wanted: media.ResponseFormat,
) -> ParsedRequest:
    """`parse_request`, plus what image models add: PNG/JPEG and multipart bodies (scalars in
    the query string, as with npy), and the per-pixel errors a heat map is drawn from."""
    if media.media_type(raw.content_type).startswith(("image/", "multipart/")):
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
        parsed = parse_request(raw, settings, OPERATIONS[route].array_field, item_values)
    if wanted == "png" and route == "anomaly-score":
        params = {**parsed.params, "per_feature": True}
        parsed = ParsedRequest(parsed.array, params, parsed.from_query)
    return parsed


def negotiate(model: ServedModel, route: str, accept: str | None) -> media.ResponseFormat:
    """The response format for this route and model: PNG only where images can be drawn.

    Only a range naming image/png or image/* can pick PNG, so every other Accept header takes
    exactly the path it always took (the same format, the same 406)."""
    if accept is None or "image/" not in accept.lower():
        return media.response_format(accept)
    with_png: tuple[media.ResponseFormat, ...] = (*media.ARRAY_FORMATS, "png")
    try:
        if route not in images.PNG_OUTPUT_ROUTES:
            raise images.ImagesUnavailable(
                f"/{route} sends arrays only; PNG comes from "
                + ", ".join(f"/{name}" for name in images.PNG_OUTPUT_ROUTES)
            )
        images.image_spec(model)
    except images.ImagesUnavailable as why:
        try:
            return media.response_format(accept)
        except NotAcceptable:
            if media.response_format(accept, with_png) != "png":
                raise
            available = [media.JSON_MEDIA_TYPE, media.NPY_MEDIA_TYPE, media.NPZ_MEDIA_TYPE]
            raise NotAcceptable(
                f"cannot send {media.PNG_MEDIA_TYPE}: {why}; available: {', '.join(available)}",
                {"accept": accept, "available": available},
            ) from None
    return media.response_format(accept, with_png)


def render(
    result: dict[str, Any],
    raw: RawRequest,
    route: str,
    wanted: media.ResponseFormat,
    served: ServedModel | None = None,
) -> RawResponse:
    """JSON by default; `Accept: application/x-npy` sends one array (the route's main one, or
    `?output=NAME`) with the scalars as X-* headers; `application/x-npz` sends every array;
    `image/png` (image models, `negotiate`) a grid of images or heat maps of `served`."""
    if wanted == "json":
        return RawResponse(200, media.JSON_MEDIA_TYPE, json_write.json_bytes(result))
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
        return RawResponse(200, media.PNG_MEDIA_TYPE, body, headers)
    if wanted == "npz":
        return RawResponse(200, media.NPZ_MEDIA_TYPE, npy.npz_bytes(arrays), headers)
    name = raw.query.get("output", OPERATIONS[route].primary_field)
    if name not in arrays:
        raise InvalidInput(
            f"output: {excerpt(name)} is not an array of this response; choose from "
            f"{sorted(arrays)}",
            {"field": "output", "allowed": sorted(arrays)},
        )
    headers["X-Output"] = name
    return RawResponse(200, media.NPY_MEDIA_TYPE, npy.npy_bytes(arrays[name]), headers)


# --- the operations, one per route ---------------------------------------------------------


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


async def serve_operation(
    state: ServiceState,
    route: str,
    name: str | None,
    version: str | None,
    head: RequestHead,
    receive: Receive,
) -> RawResponse:
    """One array request, from its head and body to raw bytes; a failure is raised as a domain
    error (service.errors), for the transport to answer in its protocol. The model is resolved
    and the response format agreed before the body is read, so the body's limit is the model's
    (`route_body_limit`) and a 404 or 406 costs no read. What it learns (model, items,
    anomalies, codec times) goes to the request's record."""
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
        primary, flags = result.get(OPERATIONS[route].primary_field), result.get("is_anomaly")
        record.items = None if primary is None else len(primary)
        if flags is not None:
            record.anomalies = int(np.count_nonzero(flags))
        began = time.perf_counter()
        response = render(result, raw, route, wanted, model)
        record.encode_s = time.perf_counter() - began
        return response
    except MemoryError:
        raise OutOfMemory(
            "the worker ran out of memory answering; retry later", headers={"Retry-After": "1"}
        ) from None
    finally:
        if inference is not None:
            inference.finished(reader, 0 if response is None else len(response.body))
