"""A domain error as a gRPC status: the code a gRPC client acts on, the error's own message,
and for an overloaded worker the retry hint a REST client gets as Retry-After.

Mapped from what the error means, not only its HTTP status: the REST 503s split into
UNAVAILABLE (models still loading), RESOURCE_EXHAUSTED (no free slot, body budget or memory:
retry later) and DEADLINE_EXCEEDED (the request's deadline passed); a 413 is a request that
will never fit, INVALID_ARGUMENT, not a transient RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from service.errors import ServiceError

_BY_CODE = {
    "not_ready": grpc.StatusCode.UNAVAILABLE,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "out_of_memory": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "reload_incomplete": grpc.StatusCode.UNAVAILABLE,
}
_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# gRPC's own pushback trailer (gRFC A6: a client's retry policy waits this long), and the
# seconds a person reads, as in REST's Retry-After.
PUSHBACK_TRAILER = "grpc-retry-pushback-ms"
RETRY_AFTER_TRAILER = "retry-after"


@dataclass(frozen=True)
class GrpcStatus:
    code: grpc.StatusCode
    message: str
    trailers: tuple[tuple[str, str], ...] = ()


def grpc_status(error: ServiceError) -> GrpcStatus:
    code = _BY_CODE.get(error.code) or _BY_STATUS.get(error.status, grpc.StatusCode.INTERNAL)
    trailers: tuple[tuple[str, str], ...] = ()
    retry_after = error.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        trailers = (
            (PUSHBACK_TRAILER, str(int(retry_after) * 1000)),
            (RETRY_AFTER_TRAILER, retry_after),
        )
    return GrpcStatus(code, error.message, trailers)
