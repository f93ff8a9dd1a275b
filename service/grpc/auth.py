"""API keys on gRPC: the same keys, carried the same way (`authorization: Bearer KEY` or
`x-api-key: KEY` metadata) and matched by the same code as over HTTP
(service.dataplane.api_keys). A call without a key ends UNAUTHENTICATED, with a wrong one
PERMISSION_DENIED, before its handler runs; each refusal is counted and logged as a request.

Open without a key, as their REST twins are open: ServerLive and ServerReady while
/v2/health/live and /v2/health/ready are in VAE_AUTH_OPEN_PATHS, the standard health service
(Kubernetes' gRPC probes carry no key) while /readyz is; a method's full path
(`/inference.GRPCInferenceService/ModelMetadata`, or a prefix with `*`) can be listed there too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from service.dataplane.api_keys import ApiKeys, presented_key
from service.errors import Forbidden, ServiceError, Unauthorized
from service.grpc.observe import CallObserver, Context
from service.grpc.servicer import method_path
from service.grpc.status import grpc_status

HEALTH_PREFIX = "/grpc.health.v1.Health/"
# gRPC methods opened by the REST path that means the same.
REST_TWINS = {
    "/v2/health/live": (method_path("ServerLive"),),
    "/v2/health/ready": (method_path("ServerReady"),),
}


def open_methods(
    open_paths: frozenset[str], open_prefixes: tuple[str, ...]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact method paths, prefixes) answered without a key."""
    exact = set(open_paths)
    for rest, methods in REST_TWINS.items():
        if rest in open_paths:
            exact.update(methods)
    prefixes = list(open_prefixes)
    if "/readyz" in open_paths:
        prefixes.append(HEALTH_PREFIX)
    return frozenset(exact), tuple(prefixes)


def _metadata_pairs(details: grpc.HandlerCallDetails) -> list[tuple[bytes, bytes]]:
    pairs = []
    for key, value in details.invocation_metadata or ():
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
        pairs.append((key.encode("ascii", "replace"), raw))
    return pairs


if TYPE_CHECKING:  # generic in grpcio's type stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]


def _refusing_handler(
    handler: Handler, refuse: Callable[[Any, Context], Awaitable[Any]]
) -> Handler:
    """A handler of the same kind (unary or streaming each way) that only refuses."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        keys: ApiKeys,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...],
        observer: CallObserver,
    ) -> None:
        self.keys = keys
        self.open_exact, self.open_prefixes = open_methods(open_paths, open_prefixes)
        self.observer = observer

    def is_open(self, method: str) -> bool:
        return method in self.open_exact or any(method.startswith(p) for p in self.open_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self.is_open(method):
            return handler
        key = presented_key(_metadata_pairs(handler_call_details))
        if key is None:
            error: ServiceError = Unauthorized(
                "an API key is required: send 'authorization: Bearer <key>' or "
                "'x-api-key: <key>' metadata"
            )
        elif not self.keys.allows(key):
            error = Forbidden("the API key is not valid")
        else:
            return handler
        observer = self.observer

        async def refuse(request: Any, context: Context) -> Any:
            with observer.call(method, context.peer()) as record:
                record.status = error.status
                status = grpc_status(error)
                await context.abort(status.code, status.message)

        return _refusing_handler(handler, refuse)
