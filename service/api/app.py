"""The app: `create_app(settings)`, models loaded in the lifespan, thin routes.

The array routes are answered by `service.api.fastpath` in front of FastAPI; the FastAPI routes
declared here carry their OpenAPI documentation and serve them when VAE_FAST_PATH is off. Both
call `service.dataplane.operations.serve_operation`, which decides where the work runs (inline when
small, a thread pool or the dynamic batcher otherwise). Every route exists at the top level
(default model), under `/models/{name}` and under `/models/{name}/versions/{version}`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from service.api import openapi
from service.api.admin import register_reload_routes
from service.api.deps import ReadyRepository, ServedState, served_state
from service.api.errors import register_error_handlers, to_response
from service.api.fastpath import FastPath
from service.api.monitoring import register_monitoring_routes
from service.api.openapi import OPERATION_DOCS, OperationDoc
from service.api.pages import register_pages
from service.api.payload_capture import PayloadCapture
from service.api.responses import json_response
from service.api.routes import ARRAY_ROUTES, ArrayRoute
from service.api.security import AUTHENTICATED, ApiKeyGuard, document_api_keys
from service.api.v2 import register_v2_routes
from service.asgi import ASGIApp
from service.dataplane.inference import Inference
from service.dataplane.monitor_flush import MonitorFlusher
from service.dataplane.operations import RequestHead, serve_operation
from service.dataplane.state import ServiceState
from service.grpc.server import start_grpc_server
from service.models.repository import ModelRepository
from service.observability.metrics import (
    ServiceMetrics,
    count_connection_refusals,
    register_metrics_route,
)
from service.observability.monitoring_metrics import MonitoringCollector
from service.observability.observe import RequestObserver
from service.observability.payload_log import PayloadLogger
from service.observability.request_context import current_request
from service.observability.request_lines import RequestLines
from service.settings import ServiceSettings

log = logging.getLogger("vae_service")


def _handler(route: str) -> Callable[[Request, str | None, str | None], Awaitable[Response]]:
    async def handle(request: Request, name: str | None, version: str | None) -> Response:
        headers = request.headers
        head = RequestHead(
            headers.get("content-type"),
            headers.get("accept"),
            dict(request.query_params),
            headers.get("content-length"),
        )
        raw = await serve_operation(
            served_state(request), route, name, version, head, request.receive
        )
        return to_response(raw)

    return handle


def _register(app: FastAPI, route: ArrayRoute, doc: OperationDoc) -> None:
    handle = _handler(route.operation)

    async def default_model(request: Request) -> Response:
        return await handle(request, None, None)

    async def named_model(request: Request, name: str) -> Response:
        return await handle(request, name, None)

    async def versioned_model(request: Request, name: str, version: str) -> Response:
        return await handle(request, name, version)

    endpoint: Callable[..., Awaitable[Response]]
    if route.names_version:
        endpoint, suffix = versioned_model, "exact version"
    elif route.names_model:
        endpoint, suffix = named_model, "named model, served version"
    else:
        endpoint, suffix = default_model, "default model"
    operation_id = route.operation.replace("-", "_") + "_" + suffix.split(",")[0].replace(" ", "_")
    app.add_api_route(
        route.template,
        endpoint,
        methods=["POST"],
        summary=f"{doc.summary} ({suffix})",
        description=doc.description,
        operation_id=operation_id,
        tags=[route.operation],
        openapi_extra=doc.openapi_extra(),
        responses=doc.responses(path_parameters=route.names_model),
        response_class=Response,
    )


def create_app(
    settings: ServiceSettings | None = None,
    *,
    reload_dir: Path | None = None,
    freeze_after_load: bool = False,
    serve_grpc: bool = False,
) -> ASGIApp:
    """The ASGI app to serve, outside in: the request observer (request ids, metrics, request
    log lines), CORS (when origins are set), the API key guard (when keys are set), the fast
    path, and the FastAPI app (all other routes, the OpenAPI docs, the lifespan that loads
    models). Raises ApiKeyError for an unusable key. `reload_dir`: the folder through which
    the server's workers signal each other to reload (`service.dataplane.reload`).
    `freeze_after_load`: a server worker's app, the process's only one (`_freeze_what_was_loaded`);
    never in a process that makes many apps (tests), whose old apps would never be collected.
    `serve_grpc`: also serve the Open Inference Protocol over gRPC on VAE_GRPC_PORT
    (service.grpc.server) while the app runs: a server worker's app, not a test's."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics() if settings.metrics else None
    # The connection limits refuse before any request exists; this counts what they refuse.
    count_connection_refusals(metrics)
    state = ServiceState(settings, metrics=metrics)
    if metrics is not None and settings.monitoring:
        metrics.registry.register(MonitoringCollector(lambda: state.repository))
    # JSON: the service writes each request's line; text: uvicorn's access log does.
    request_lines = RequestLines() if settings.log_format == "json" else None
    keys = settings.api_key_list()
    state.readiness_details_open = not keys and settings.binds_loopback_only()
    flusher = MonitorFlusher(state)
    payload_logger = (
        PayloadLogger(
            settings.payload_log_url,
            settings.payload_log_queue,
            settings.payload_log_max_bytes,
            settings.payload_log_timeout_s,
            metrics,
        )
        if settings.payload_log_url
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Announced before loading: a reload signalled meanwhile is not missed.
        generation = reloader.announce()
        try:
            state.repository = await run_in_threadpool(ModelRepository.load, settings)
            state.inference = Inference(settings, metrics)
            if metrics is not None:
                metrics.models_loaded(state.repository)
        except BaseException:
            await reloader.stop()  # a worker that fails to start leaves no report behind
            raise
        if freeze_after_load:
            _freeze_what_was_loaded()
        state.ready = True  # every bundle loaded and ran its warm-up batch
        await reloader.start(generation)
        if metrics is not None:
            metrics.start()
        flusher.start()
        if payload_logger is not None:
            payload_logger.start()
        grpc_server = (
            await start_grpc_server(state, settings, metrics, request_lines, payload_logger)
            if serve_grpc
            else None
        )
        try:
            yield
        finally:
            if grpc_server is not None:
                # First: its streams drain while the data plane still serves them.
                await grpc_server.stop(settings.shutdown_drain_s)
            await reloader.stop()
            await flusher.stop()
            if payload_logger is not None:
                await payload_logger.stop()
            state.ready = False
            state.inference.close()
            if metrics is not None:
                await metrics.stop()
            if request_lines is not None:
                request_lines.close()

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
    app.state.service = state

    for route in ARRAY_ROUTES:
        if route.protocol == "native":
            _register(app, route, OPERATION_DOCS[route.operation])
    _register_metadata_routes(app)
    register_pages(app)  # the web page at / and the report plots it shows
    register_v2_routes(app)
    register_monitoring_routes(app)
    reloader = register_reload_routes(app, state, reload_dir)
    if metrics is not None:
        register_metrics_route(app, metrics)
    register_error_handlers(app)
    # The fast path sits outside even FastAPI's own middleware: measured, Starlette's stack
    # costs as much per request as a single-item model call (bench/RESULTS.md).
    served: ASGIApp = FastPath(app, state)
    if keys:
        open_paths, open_prefixes = settings.open_paths()
        guard = ApiKeyGuard(served, keys, open_paths, open_prefixes)
        document_api_keys(app, guard)
        served = guard
    origins = settings.cors_origins()
    if origins:
        # Outside the key guard: a browser's preflight (OPTIONS) never carries the key.
        served = CORSMiddleware(
            served,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    if payload_logger is not None:
        # Inside the observer, which sets the request id and status the events carry.
        served = PayloadCapture(served, payload_logger)
    # Outermost: refusals, preflights and errors get a request id, a count and a log line too.
    return RequestObserver(served, app.router.routes, metrics, request_lines)


def _freeze_what_was_loaded() -> None:
    """Move every object alive after start-up (modules, settings, models) out of the garbage
    collector's sight: its full collections then walk only what requests made since, not the
    hundreds of thousands of objects numpy, onnx, pydantic and FastAPI leave behind. Measured,
    make bench's S1 with 2 workers at 64 connections: p99 31.2-31.6 ms -> 14.7-16.8 ms on the
    784-input model, 30.3 -> 10.7 ms on the default one, requests/s unchanged. Once, at
    start-up: what a hot reload loads later stays collectable (frozen objects that become
    cyclic garbage are never freed)."""
    gc.collect()
    gc.freeze()


# What a browser client may send across origins.
CORS_REQUEST_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Accept",
    "Inference-Header-Content-Length",
    "X-Request-ID",
]
# "*": the X-* headers that carry a response's scalars, whichever the route sends; valid
# because no credentials mode is allowed.
CORS_EXPOSED_HEADERS = ["*"]


def _register_metadata_routes(app: FastAPI) -> None:
    @app.get(
        "/healthz",
        tags=["health"],
        summary="Liveness: the process answers",
        responses=openapi.health_responses(),
    )
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: every model loaded and warmed up",
        responses=openapi.ready_responses(),
    )
    async def readyz(request: Request, state: ServedState) -> Response:
        repository = state.repository
        if repository is None or not state.ready:
            return json_response({"status": "loading"}, 503, {"Retry-After": "1"})
        # The reasons name files on the server: only for a caller with a key, or anyone when
        # the server runs keyless on loopback (a developer's own machine).
        reasons = state.readiness_details_open or bool(request.scope.get(AUTHENTICATED))
        refused = (
            repository.refused
            if reasons
            else dict.fromkeys(repository.refused, "refused (the reason is shown with an API key)")
        )
        return json_response(
            {
                "status": "ready",
                "models": {n: repository.served_version[n] for n in sorted(repository.models)},
                "default_model": repository.default_name,
                "refused": refused,
            }
        )

    @app.get(
        "/models",
        tags=["models"],
        summary="Every loaded model and its served version",
        responses=openapi.models_responses(),
    )
    async def list_models(repository: ReadyRepository) -> Response:
        return json_response(
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

    @app.get(
        "/models/{name}",
        tags=["models"],
        summary="One model's metadata (served version)",
        responses=openapi.model_responses(),
    )
    async def model_metadata(name: str, repository: ReadyRepository) -> Response:
        model = repository.resolve(name, None)
        current_request().served_by(model.name, model.version)
        return json_response({**model.public_metadata(), "versions": repository.versions_of(name)})

    @app.get(
        "/models/{name}/versions/{version}",
        tags=["models"],
        summary="One model version's metadata",
        responses=openapi.model_responses(),
    )
    async def version_metadata(name: str, version: str, repository: ReadyRepository) -> Response:
        model = repository.resolve(name, version)
        current_request().served_by(model.name, model.version)
        return json_response({**model.public_metadata(), "versions": repository.versions_of(name)})
