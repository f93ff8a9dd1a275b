"""The array routes on the wire: one call decodes a request's bytes into a typed request, one
call encodes a typed result into the answer's bytes.

`decode_request` reads JSON (service.codecs.json_read), npy (service.codecs.npy) or, for image
models, PNG/JPEG and multipart bodies (service.codecs.images), and types every parameter;
`negotiate` agrees the answer's format before the body is read; `encode_result` writes JSON
(service.codecs.json_write), npy, npz or a PNG. The data plane calls each once per request
(service.dataplane.operations) and never looks at bytes itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from bundle.arrays import FloatArray
from bundle.image_decoding import ImagesUnavailable
from service.codecs import images, json_read, json_simple, json_write, media, npy, params
from service.errors import InvalidInput, NotAcceptable, excerpt
from service.models.requests import (
    OPERATIONS,
    DecodeRequest,
    EncodeRequest,
    OperationRequest,
    ReconstructRequest,
    SampleRequest,
    ScoreRequest,
)
from service.models.results import OperationResult
from service.models.served_model import ServedModel
from service.settings import ServiceSettings


class RawRequest(NamedTuple):
    """An array request as bytes, with the headers and query its decoding needs. (Tuples: made
    for every request, a frozen dataclass cost ~1 us more each.)"""

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


# --------------------------------------------------------------------------- decoding


def decode_request(
    model: ServedModel,
    route: str,
    raw: RawRequest,
    settings: ServiceSettings,
    wanted: media.ResponseFormat,
) -> OperationRequest:
    """The request's array and parameters, typed, whichever wire format carried them. A JSON
    array with more numbers than one item of this model holds is refused before it is parsed;
    a PNG answer of /anomaly-score is drawn from per-feature errors, so it asks for them."""
    fields = read_fields(model, route, raw, settings)
    if route == "anomaly-score":
        per_feature = fields.flag("per_feature") or wanted == "png"
        return ScoreRequest(fields.items(), fields.text("score_type"), per_feature)
    if route == "reconstruct":
        return ReconstructRequest(fields.items(), fields.integer("samples"), fields.integer("seed"))
    if route == "encode":
        return EncodeRequest(fields.items(), fields.flag("sample"), fields.integer("seed"))
    if route == "decode":
        return DecodeRequest(fields.items())
    if route == "sample":
        n, seed = fields.integer("n"), fields.integer("seed")
        return SampleRequest(1 if n is None else n, seed, fields.number("temperature", 1.0))
    raise InvalidInput(f"unknown operation {excerpt(route)}")


def read_fields(
    model: ServedModel, route: str, raw: RawRequest, settings: ServiceSettings
) -> Fields:
    """The body's array and its other fields, untyped: a JSON object carries everything; npy
    and image bodies carry the array, and the scalars come from the query string."""
    array_field = OPERATIONS[route].ARRAY_FIELD
    if media.media_type(raw.content_type).startswith(("image/", "multipart/")):
        array = images.decode_image_request(
            raw.content_type or "",
            raw.body,
            model,
            route,
            max_pixels=settings.max_image_pixels,
            max_items=settings.max_batch_size,
        )
        return Fields(array, raw.query, from_query=True)
    if media.request_format(raw.content_type) == "npy":
        if array_field is None:
            raise InvalidInput("this route takes a JSON body, not application/x-npy")
        return Fields(npy.parse_npy(raw.body, array_field), raw.query, from_query=True)
    if not raw.body and array_field is None:
        # A body-less call (POST /sample?n=4&seed=1) takes its parameters from the query.
        return Fields(None, raw.query, from_query=True)
    if array_field is not None and len(raw.body) <= json_read.SMALL_BODY_BYTES:
        simple = json_simple.read_simple_batch(
            raw.body, array_field, settings.max_json_depth, settings.max_batch_size
        )
        if simple is not None:  # the common body, read in C; anything else: the general way
            return Fields(simple[0], simple[1], from_query=False)
    payload = json_read.parse_json_object(raw.body, max_depth=settings.max_json_depth)
    if array_field is None:
        return Fields(None, payload, from_query=False)
    items = json_read.array_field(
        payload,
        array_field,
        max_items=settings.max_batch_size,
        max_item_values=model.latent_dim if route == "decode" else model.feature_count,
    )
    return Fields(items, payload, from_query=False)


class Fields:
    """A request's array and its other fields as the wire carried them; each reader types one
    field or names it in a 422. Query strings carry text, JSON carries typed values."""

    __slots__ = ("array", "from_query", "values")

    def __init__(self, array: FloatArray | None, values: Mapping[str, Any], from_query: bool):
        self.array = array
        self.values = values
        self.from_query = from_query

    def items(self) -> FloatArray:
        # json_read.array_field, npy and images each return the array or refuse the body.
        assert self.array is not None, "every route with an array field reads one"
        return self.array

    def integer(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
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
        value = self.values.get(name)
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
        value = self.values.get(name, False)
        if self.from_query and isinstance(value, str):
            return params.parse_bool(value, name)
        if not isinstance(value, bool):
            raise InvalidInput(
                f"{name}: expected true or false, got {excerpt(value)}", {"field": name}
            )
        return value

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{name}: expected a string, got {excerpt(value)}", {"field": name})
        return value


# --------------------------------------------------------------------------- encoding


def negotiate(model: ServedModel, route: str, accept: str | None) -> media.ResponseFormat:
    """The response format for this route and model: PNG only where images can be drawn.

    Only a range naming image/png or image/* can pick PNG, so every other Accept header takes
    exactly the path it always took (the same format, the same 406)."""
    if accept is None or "image/" not in accept.lower():
        return media.response_format(accept)
    with_png: tuple[media.ResponseFormat, ...] = (*media.ARRAY_FORMATS, "png")
    try:
        if route not in images.PNG_OUTPUT_ROUTES:
            raise ImagesUnavailable(
                f"/{route} sends arrays only; PNG comes from "
                + ", ".join(f"/{name}" for name in images.PNG_OUTPUT_ROUTES)
            )
        images.image_spec(model)
    except ImagesUnavailable as why:
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


def encode_result(
    result: OperationResult,
    model: ServedModel,
    route: str,
    wanted: media.ResponseFormat,
    query: Mapping[str, str],
) -> RawResponse:
    """JSON by default, with the model that answered; `application/x-npy` sends one array (the
    result's main one, or `?output=NAME`) with the scalars as X-* headers; `application/x-npz`
    sends every array; `image/png` (image models, `negotiate`) a grid of images or heat maps."""
    fields = result.fields()
    if wanted == "json":
        fields["model"] = {"name": model.name, "version": model.version}
        return RawResponse(200, media.JSON_MEDIA_TYPE, json_write.json_bytes(fields))
    arrays = {k: v for k, v in fields.items() if isinstance(v, np.ndarray)}
    headers = {
        f"X-{key.replace('_', '-').title()}": str(value)
        for key, value in fields.items()
        if not isinstance(value, np.ndarray)
    }
    headers.update({"X-Model-Name": model.name, "X-Model-Version": model.version})
    if wanted == "png":
        body, image_headers = images.png_response(arrays, route, images.image_spec(model))
        headers.update(image_headers)
        return RawResponse(200, media.PNG_MEDIA_TYPE, body, headers)
    if wanted == "npz":
        return RawResponse(200, media.NPZ_MEDIA_TYPE, npy.npz_bytes(arrays), headers)
    name = query.get("output", result.PRIMARY)
    if name not in arrays:
        raise InvalidInput(
            f"output: {excerpt(name)} is not an array of this response; choose from "
            f"{sorted(arrays)}",
            {"field": "output", "allowed": sorted(arrays)},
        )
    headers["X-Output"] = name
    return RawResponse(200, media.NPY_MEDIA_TYPE, npy.npy_bytes(arrays[name]), headers)
