"""The hot path: POSTs to the array routes answered straight from ASGI, before any routing.

Starlette's router, FastAPI's request objects and its exception middleware cost more per
request than the model does for one item. This middleware recognises the array routes
(service.api.routes, the table FastAPI registers them from too), reads the body from `receive`,
calls `serve_operation` or the v2 infer (the same code the FastAPI routes call) and writes the
bytes. Everything else (GET routes, /docs, unknown paths, other methods) goes on to the FastAPI
app untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from service.api import routes, v2
from service.api.errors import internal_error, native_error, v2_error
from service.asgi import ASGIApp, Receive, Scope, Send
from service.codecs.wire import RawResponse
from service.dataplane.operations import RequestHead, serve_operation
from service.dataplane.state import ServiceState
from service.dataplane.v2_infer import serve_infer
from service.errors import ServiceError
from service.observability.request_context import current_request

log = logging.getLogger("vae_service")
_HEADER_LENGTH = v2.HEADER_LENGTH.encode("latin-1")


class FastPath:
    def __init__(self, app: ASGIApp, state: ServiceState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            # HEAD is GET without the body (RFC 9110): the routes answer it as a GET and
            # uvicorn, which still sees HEAD in its own scope, leaves the body out.
            await self.app({**scope, "method": "GET"}, receive, send)
            return
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not self.state.settings.fast_path
        ):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        matched = routes.match(path)
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, name, version = matched
        current_request().route = route.template
        if route.protocol == "v2":
            await self._v2(scope, receive, send, path, name, version)
            return
        await _answer(
            send, path, self._serve(scope, receive, route.operation, name, version), native_error
        )

    async def _v2(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        name: str | None,
        version: str | None,
    ) -> None:
        """The Open Inference Protocol's infer, the one v2 route that carries tensors."""
        assert name is not None  # both infer routes name their model
        content_length = header_length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                content_length = value.decode("latin-1")
            elif key == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
        serving = serve_infer(self.state, name, version, header_length, content_length, receive)
        await _answer(send, path, serving, v2_error)

    async def _serve(
        self, scope: Scope, receive: Receive, route: str, name: str | None, version: str | None
    ) -> RawResponse:
        content_type = accept = content_length = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"accept":
                accept = value.decode("latin-1")
            elif key == b"content-length":
                content_length = value.decode("latin-1")
        query_string = scope.get("query_string", b"")
        query = dict(parse_qsl(query_string.decode("latin-1"))) if query_string else {}
        head = RequestHead(content_type, accept, query, content_length)
        return await serve_operation(self.state, route, name, version, head, receive)


async def _answer(
    send: Send,
    path: str,
    serving: Awaitable[RawResponse],
    render_error: Callable[[ServiceError], RawResponse],
) -> None:
    """Await the answer and send it; an error becomes the protocol's error answer."""
    try:
        response = await serving
    except ServiceError as error:
        response = render_error(error)
    except Exception:
        # A 500 is always a bug: log it whole, tell the client nothing internal.
        log.exception("unhandled error on POST %s", path)
        response = render_error(internal_error())
    await _send(send, response)


async def _send(send: Send, response: RawResponse) -> None:
    headers = [
        (b"content-type", response.media_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("latin-1")),
    ]
    headers.extend(
        (key.lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in response.headers.items()
    )
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
