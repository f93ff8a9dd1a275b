"""The FastAPI app: `create_app(settings)`, models loaded in the lifespan, thin routes.

Routes only move bytes: codecs turn the body into numpy, `ServedModel` does the work (in a
worker thread: onnxruntime releases the GIL, the event loop stays free), codecs turn the result
into bytes. Every route exists at the top level (default model), under `/models/{name}` and
under `/models/{name}/versions/{version}`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import codecs
from service.api_docs import OPERATION_DOCS, OperationDoc
from service.errors import (
    InvalidInput,
    MalformedBody,
    NotReady,
    PayloadTooLarge,
    ServiceError,
)
from service.repository import ModelRepository
from service.runtime import ServedModel
from service.settings import ServiceSettings

log = logging.getLogger("vae_service")

# (model, parsed request) -> result fields; runs in a worker thread
Operation = Callable[[ServedModel, "ParsedRequest"], dict[str, Any]]


class ParsedRequest:
    """The body's array and scalar parameters, whichever wire format carried them.

    JSON bodies carry everything in one object; npy bodies carry the array and the scalars come
    from the query string.
    """

    def __init__(
        self, array: npt.NDArray[np.float32] | None, params: dict[str, Any], from_query: bool
    ):
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError as error:
            raise MalformedBody(f"Content-Length {declared!r} is not a number") from error
        if declared_size > limit:
            raise PayloadTooLarge(
                f"request body of {declared_size} bytes is above the limit of {limit} "
                "(VAE_MAX_BODY_BYTES)",
                {"limit": limit},
            )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(
                f"request body is above the limit of {limit} bytes (VAE_MAX_BODY_BYTES)",
                {"limit": limit},
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_request(
    request: Request, settings: ServiceSettings, array_field: str | None
) -> ParsedRequest:
    body_format = codecs.request_format(request.headers.get("content-type"))
    body = await read_body(request, settings.max_body_bytes)
    if body_format == "npy":
        if array_field is None:
            raise InvalidInput("this route takes a JSON body, not application/x-npy")
        npy_array = codecs.parse_npy(body, array_field)
        return ParsedRequest(npy_array, dict(request.query_params), from_query=True)
    if not body and array_field is None:
        # A body-less call (POST /sample?n=4&seed=1) takes its parameters from the query.
        return ParsedRequest(None, dict(request.query_params), from_query=True)
    payload = codecs.parse_json_object(body, max_depth=settings.max_json_depth)
    array = codecs.array_field(payload, array_field) if array_field else None
    return ParsedRequest(array, payload, from_query=False)


PRIMARY_FIELD = {
    "encode": "mu",
    "decode": "outputs",
    "reconstruct": "outputs",
    "sample": "outputs",
    "anomaly-score": "scores",
}


def render(
    result: dict[str, Any], request: Request, route: str, wanted: codecs.ResponseFormat
) -> Response:
    """JSON by default; `Accept: application/x-npy` sends one array (the route's main one, or
    `?output=NAME`) with the scalars as X-* headers; `application/x-npz` sends every array."""
    if wanted == "json":
        return Response(codecs.json_bytes(result), media_type=codecs.JSON_MEDIA_TYPE)
    arrays = {k: np.asarray(v) for k, v in result.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
    model = scalars.pop("model", {})
    headers = {f"X-{key.replace('_', '-').title()}": str(value) for key, value in scalars.items()}
    headers.update(
        {"X-Model-Name": model.get("name", ""), "X-Model-Version": model.get("version", "")}
    )
    if wanted == "npz":
        return Response(codecs.npz_bytes(arrays), media_type=codecs.NPZ_MEDIA_TYPE, headers=headers)
    name = request.query_params.get("output", PRIMARY_FIELD[route])
    if name not in arrays:
        raise InvalidInput(
            f"output: {name!r} is not an array of this response; choose from {sorted(arrays)}",
            {"field": "output", "allowed": sorted(arrays)},
        )
    headers["X-Output"] = name
    return Response(
        codecs.npy_bytes(arrays[name]), media_type=codecs.NPY_MEDIA_TYPE, headers=headers
    )


# --- the operations, one per route ---------------------------------------------------------


def do_encode(model: ServedModel, req: ParsedRequest) -> dict[str, Any]:
    assert req.array is not None
    return model.encode(req.array, sample=req.flag("sample"), seed=req.integer("seed"))


def do_decode(model: ServedModel, req: ParsedRequest) -> dict[str, Any]:
    assert req.array is not None
    return model.decode(req.array)


def do_reconstruct(model: ServedModel, req: ParsedRequest) -> dict[str, Any]:
    assert req.array is not None
    return model.reconstruct(req.array, samples=req.integer("samples"), seed=req.integer("seed"))


def do_sample(model: ServedModel, req: ParsedRequest) -> dict[str, Any]:
    n = req.integer("n", 1)
    assert n is not None
    return model.sample(n=n, seed=req.integer("seed"), temperature=req.number("temperature", 1.0))


def do_score(model: ServedModel, req: ParsedRequest) -> dict[str, Any]:
    assert req.array is not None
    return model.score(
        req.array, score_type=req.text("score_type"), per_feature=req.flag("per_feature")
    )


OPERATIONS: dict[str, tuple[Operation, str | None]] = {
    "encode": (do_encode, "inputs"),
    "decode": (do_decode, "latents"),
    "reconstruct": (do_reconstruct, "inputs"),
    "sample": (do_sample, None),
    "anomaly-score": (do_score, "inputs"),
}


def _repository(request: Request) -> ModelRepository:
    repository: ModelRepository | None = getattr(request.app.state, "repository", None)
    if repository is None or not request.app.state.ready:
        raise NotReady("models are still loading", headers={"Retry-After": "1"})
    return repository


def _handler(route: str) -> Callable[[Request, str | None, str | None], Awaitable[Response]]:
    operation, array_field = OPERATIONS[route]

    async def handle(request: Request, name: str | None, version: str | None) -> Response:
        settings: ServiceSettings = request.app.state.settings
        model = _repository(request).resolve(name, version)
        # Negotiate before any work: a 406 should not cost an onnxruntime call.
        wanted = codecs.response_format(request.headers.get("accept"))
        parsed = await parse_request(request, settings, array_field)
        result = await run_in_threadpool(operation, model, parsed)
        result.setdefault("model", {"name": model.name, "version": model.version})
        return render(result, request, route, wanted)

    return handle


def _register(app: FastAPI, route: str, doc: OperationDoc) -> None:
    handle = _handler(route)

    async def default_model(request: Request) -> Response:
        return await handle(request, None, None)

    async def named_model(request: Request, name: str) -> Response:
        return await handle(request, name, None)

    async def versioned_model(request: Request, name: str, version: str) -> Response:
        return await handle(request, name, version)

    for prefix, endpoint, suffix in (
        ("", default_model, "default model"),
        ("/models/{name}", named_model, "named model, served version"),
        ("/models/{name}/versions/{version}", versioned_model, "exact version"),
    ):
        app.add_api_route(
            f"{prefix}/{route}",
            endpoint,
            methods=["POST"],
            summary=f"{doc.summary} ({suffix})",
            description=doc.description,
            operation_id=f"{route.replace('-', '_')}_{suffix.split(',')[0].replace(' ', '_')}",
            tags=[route],
            openapi_extra=doc.openapi_extra(),
            responses=doc.responses(),
            response_class=Response,
        )


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        app.state.repository = await run_in_threadpool(ModelRepository.load, settings)
        app.state.ready = True  # every bundle loaded and ran its warm-up batch
        yield
        app.state.ready = False

    app = FastAPI(
        title="vae-service",
        version="0.1.0",
        description=(
            "Embeddings, generations, reconstructions and calibrated anomaly scores from "
            "variational autoencoders, served from ONNX bundles. Arrays travel as nested JSON "
            "lists with a leading batch axis, or as application/x-npy."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False

    for route, doc in OPERATION_DOCS.items():
        _register(app, route, doc)
    _register_metadata_routes(app)
    _register_error_handlers(app)
    return app


def _json(
    payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    # Metadata and error bodies hold no big arrays; default=str keeps odd detail values (e.g.
    # exceptions inside validation errors) from turning an error response into a 500.
    return Response(
        orjson.dumps(payload, default=str, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=codecs.JSON_MEDIA_TYPE,
        headers=headers,
    )


def _register_metadata_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", tags=["health"], summary="Readiness: every model loaded and warmed up")
    async def readyz(request: Request) -> Response:
        repository: ModelRepository | None = getattr(request.app.state, "repository", None)
        if repository is None or not request.app.state.ready:
            return _json({"status": "loading"}, 503, {"Retry-After": "1"})
        return _json(
            {
                "status": "ready",
                "models": {n: repository.served_version[n] for n in sorted(repository.models)},
                "default_model": repository.default_name,
                "refused": repository.refused,
            }
        )

    @app.get("/models", tags=["models"], summary="Every loaded model and its served version")
    async def list_models(request: Request) -> Response:
        repository = _repository(request)
        return _json(
            {
                "default_model": repository.default_name,
                "models": [
                    {
                        **repository.resolve(name, None).public_metadata(),
                        "versions": repository.versions_of(name),
                    }
                    for name in sorted(repository.models)
                ],
            }
        )

    @app.get("/models/{name}", tags=["models"], summary="One model's metadata (served version)")
    async def model_metadata(request: Request, name: str) -> Response:
        repository = _repository(request)
        model = repository.resolve(name, None)
        return _json({**model.public_metadata(), "versions": repository.versions_of(name)})

    @app.get(
        "/models/{name}/versions/{version}",
        tags=["models"],
        summary="One model version's metadata",
    )
    async def version_metadata(request: Request, name: str, version: str) -> Response:
        repository = _repository(request)
        model = repository.resolve(name, version)
        return _json({**model.public_metadata(), "versions": repository.versions_of(name)})


def _register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> Response:
        return _json(error.body(), error.status, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        body = InvalidInput("request does not match the route", error.errors()).body()
        return _json(body, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        body = {"error": {"code": code, "message": str(error.detail), "detail": None}}
        return _json(body, error.status_code, dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        # A 500 is always a bug: log it whole, tell the client nothing internal.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"error": {"code": "internal_error", "message": "internal error", "detail": None}}
        return _json(body, 500)
