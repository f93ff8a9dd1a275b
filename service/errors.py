"""Domain errors that carry their HTTP status; one handler turns them into the error body.

`{"error": {"code": ..., "message": ..., "detail": ...}}` (DESIGN.md section 3). Code below the
transport raises these and never guesses a status; a plain exception reaching the handler is a
bug and becomes a 500.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, detail: Any = None, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class InvalidInput(ServiceError):
    """Bad shape, dtype, NaN/Inf, empty batch, wrong field: the client must change the request."""

    status = 422
    code = "invalid_input"


class MalformedBody(ServiceError):
    """The bytes are not valid JSON / npy at all."""

    status = 400
    code = "malformed_body"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class NotAcceptable(ServiceError):
    status = 406
    code = "not_acceptable"


class ModelNotFound(ServiceError):
    status = 404
    code = "model_not_found"


class OperationNotSupported(ServiceError):
    """The model kind cannot do this (e.g. /sample on a plain autoencoder)."""

    status = 409
    code = "operation_not_supported"


class NotReady(ServiceError):
    status = 503
    code = "not_ready"
