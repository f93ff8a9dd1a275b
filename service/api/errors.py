"""Where an error becomes an answer: one function per protocol, used by every way in.

The native routes answer `{"error": {"code", "message", "detail"}}` with the error's own status
(`native_error`); the Open Inference Protocol answers `{"error": message}`, where validation
failures and operations a model cannot do are both 400 (`v2_error`). The fast path calls these
directly; the FastAPI routes reach `native_error` through the handlers registered here. The
data plane raises domain errors (service.errors) and never renders them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.responses import json_bytes, json_response
from service.codecs import media
from service.codecs.wire import RawResponse
from service.errors import InvalidInput, ServiceError, V2Error

log = logging.getLogger("vae_service")

# Status of a domain error in the v2 protocol: validation failures and operations a model
# cannot do are both "bad request" there.
_V2_STATUS = {422: 400, 409: 400}


def native_error(error: ServiceError) -> RawResponse:
    return RawResponse(error.status, media.JSON_MEDIA_TYPE, json_bytes(error.body()), error.headers)


def v2_error(error: ServiceError) -> RawResponse:
    status = error.status
    if not isinstance(error, V2Error):  # a domain error, in the protocol's status
        status = _V2_STATUS.get(status, status)
    body = json_bytes({"error": error.message})
    return RawResponse(status, media.JSON_MEDIA_TYPE, body, dict(error.headers))


def internal_error() -> ServiceError:
    """What a client is told of a bug (a 500): nothing internal; the log has it whole."""
    return ServiceError("internal error")


def to_response(raw: RawResponse) -> Response:
    """A raw answer as the FastAPI routes return it."""
    return Response(
        raw.body, status_code=raw.status, media_type=raw.media_type, headers=raw.headers
    )


def register_error_handlers(app: FastAPI) -> None:
    """FastAPI's own errors (validation, unknown path, method) and anything a route raises,
    answered in the native error body."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> Response:
        return to_response(native_error(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return to_response(
            native_error(InvalidInput("request does not match the route", error.errors()))
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        body = {"error": {"code": code, "message": str(error.detail), "detail": None}}
        return json_response(body, error.status_code, dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return to_response(native_error(internal_error()))
