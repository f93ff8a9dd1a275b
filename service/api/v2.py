"""The Open Inference Protocol (KServe "v2" REST predict protocol): its routes.

Each bundle `<name>` is offered as three v2 models (service.models.v2_views): `<name>-encoder`,
`<name>-decoder` and `<name>`. Infer runs in the data plane (service.dataplane.v2_infer), its
body read and written by service.codecs.v2_json; this module is the HTTP side: metadata,
health, and the FastAPI infer route (the fast path calls `serve_infer` itself). Errors use the
protocol's own body, `{"error": "<message>"}` (service.api.errors.v2_error).
"""

from __future__ import annotations

import importlib.metadata

from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.api import openapi
from service.api.deps import ServedState, served_state
from service.api.errors import to_response, v2_error
from service.api.responses import json_response
from service.api.routes import ARRAY_ROUTES
from service.dataplane.v2_infer import serve_infer
from service.errors import ServiceError
from service.models.v2_views import find_model
from service.observability.request_context import current_request

TAG = "open inference protocol"
HEADER_LENGTH = "inference-header-content-length"


def _server_version() -> str:
    try:
        return importlib.metadata.version("vae-service")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


async def infer(request: Request, name: str, version: str | None) -> Response:
    """The FastAPI route's way in (VAE_FAST_PATH=false); the fast path calls serve_infer."""
    headers = request.headers
    try:
        raw = await serve_infer(
            served_state(request),
            name,
            version,
            headers.get(HEADER_LENGTH),
            headers.get("content-length"),
            request.receive,
        )
    except ServiceError as error:
        raw = v2_error(error)
    return to_response(raw)


def register_v2_routes(app: FastAPI) -> None:
    """The v2 endpoints, documented under the "open inference protocol" tag."""

    @app.get(
        "/v2",
        tags=[TAG],
        summary="Server metadata",
        responses={200: openapi.json_body("the server", openapi.V2_SERVER_METADATA)},
    )
    async def server_metadata() -> Response:
        return json_response(
            {
                "name": "vae-service",
                "version": _server_version(),
                "extensions": ["binary_tensor_data"],
            }
        )

    @app.get(
        "/v2/health/live",
        tags=[TAG],
        summary="Server liveness",
        responses={200: openapi.json_body("the process answers", openapi.V2_LIVE)},
    )
    async def server_live() -> Response:
        return json_response({"live": True})

    @app.get(
        "/v2/health/ready",
        tags=[TAG],
        summary="Server readiness",
        responses=openapi.v2_ready_responses(),
    )
    async def server_ready(state: ServedState) -> Response:
        if state.repository is None or not state.ready:
            return json_response({"ready": False}, 503, {"Retry-After": "1"})
        return json_response({"ready": True})

    async def metadata(request: Request, name: str, version: str | None) -> Response:
        try:
            repository = served_state(request).require_ready()[0]
            view = find_model(repository, name, version)
            current_request().served_by(view.model.name, view.model.version)
            return json_response(view.metadata(repository.versions_of(view.base)))
        except ServiceError as error:
            return to_response(v2_error(error))

    async def ready(request: Request, name: str, version: str | None) -> Response:
        try:
            repository = served_state(request).require_ready()[0]
            view = find_model(repository, name, version)
            current_request().served_by(view.model.name, view.model.version)
            return json_response({"name": view.name, "ready": True})
        except ServiceError as error:
            return to_response(v2_error(error))

    @app.get(
        "/v2/models/{name}",
        tags=[TAG],
        summary="Model metadata (served version)",
        responses=openapi.v2_model_responses(openapi.V2_MODEL_METADATA),
    )
    async def model_metadata(request: Request, name: str) -> Response:
        return await metadata(request, name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}",
        tags=[TAG],
        summary="Model version metadata",
        responses=openapi.v2_model_responses(openapi.V2_MODEL_METADATA),
    )
    async def version_metadata(request: Request, name: str, version: str) -> Response:
        return await metadata(request, name, version)

    @app.get(
        "/v2/models/{name}/ready",
        tags=[TAG],
        summary="Model readiness (served version)",
        responses=openapi.v2_model_responses(openapi.V2_MODEL_READY),
    )
    async def model_ready(request: Request, name: str) -> Response:
        return await ready(request, name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}/ready",
        tags=[TAG],
        summary="Model version readiness",
        responses=openapi.v2_model_responses(openapi.V2_MODEL_READY),
    )
    async def version_ready(request: Request, name: str, version: str) -> Response:
        return await ready(request, name, version)

    async def model_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    async def version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    for route in ARRAY_ROUTES:  # the infer routes, from the one table of array routes
        if route.protocol == "v2":
            app.add_api_route(
                route.template,
                version_infer if route.names_version else model_infer,
                methods=["POST"],
                tags=[TAG],
                summary="Inference (exact version)"
                if route.names_version
                else "Inference (served version)",
                openapi_extra=openapi.v2_infer_openapi_extra(),
                responses=openapi.v2_infer_responses(),
            )
