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


class ReportFileNotFound(ServiceError):
    """A bundle's report/ folder has no servable file of that name (or no report/ at all)."""

    status = 404
    code = "report_file_not_found"


class OperationNotSupported(ServiceError):
    """The model kind cannot do this (e.g. /sample on a plain autoencoder)."""

    status = 409
    code = "operation_not_supported"


class NotReady(ServiceError):
    status = 503
    code = "not_ready"


class Overloaded(ServiceError):
    """Every model slot is busy and the queue is full: come back after Retry-After."""

    status = 503
    code = "overloaded"


class OutOfMemory(ServiceError):
    """The worker could not get the memory an answer needs: its state, not the request's."""

    status = 503
    code = "out_of_memory"


class RequestBodyTimeout(ServiceError):
    """The body did not arrive before the request's deadline (VAE_REQUEST_TIMEOUT_S)."""

    status = 408
    code = "request_timeout"


class RequestTimedOut(ServiceError):
    """The request waited and ran longer than VAE_REQUEST_TIMEOUT_S."""

    status = 503
    code = "timeout"


class Unauthorized(ServiceError):
    """No API key was sent."""

    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """An API key was sent, but it is not one of the configured keys."""

    status = 403
    code = "forbidden"


class V2Error(ServiceError):
    """An error only the Open Inference Protocol has (a tensor naming an input the model does
    not take, say), with the status that protocol gives it: 400 for every bad request."""

    code = "bad_request"

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, headers=headers)
        self.status = status


class ReloadRefused(ServiceError):
    """A hot reload would leave nothing servable, or break VAE_DEFAULT_MODEL or a pin: the
    models loaded before go on serving."""

    status = 409
    code = "reload_refused"


class ReloadIncomplete(ServiceError):
    """A hot reload was signalled, but some worker has not reported it done in time."""

    status = 503
    code = "reload_incomplete"


# Client values quoted in an error message: enough to recognise, never the whole of it (a 400 kB
# list once came back as a 586 kB error body).
EXCERPT_CHARACTERS = 64


def excerpt(value: object, limit: int = EXCERPT_CHARACTERS) -> str:
    """A client's value as an error message may quote it: its repr (control characters and
    quotes escaped), cut to `limit` characters; containers and huge numbers are described."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        # str() of an int beyond 4300 digits raises; nobody reads such a number anyway.
        bits = value.bit_length()
        text = repr(value) if bits <= 256 else f"<an integer of {bits} bits>"
    elif isinstance(value, str | bytes):
        text = repr(value[: limit + 1])
    elif isinstance(value, list | tuple | dict):
        kind = "an object" if isinstance(value, dict) else "an array"
        text = f"<{kind} of {len(value)} items>"
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
