"""The outermost ASGI layer: a request id on every response, and each request's metrics and log
line once it is answered.

It sits outside CORS, the API key guard and the fast path, so refusals (401, 403), preflights
and errors are counted, logged and carry their X-Request-ID like every other answer. The
per-request work is a header scan, a few clock reads and an append to `ServiceMetrics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match

from service.asgi import ASGIApp, Message, Receive, Scope, Send
from service.observability.logs import access_log
from service.observability.metrics import ServiceMetrics
from service.observability.request_context import (
    REQUEST_ID_HEADER,
    RequestRecord,
    accepted_request_id,
    enter_request,
    leave_request,
    new_request_id,
)
from service.observability.request_lines import RequestLines

# nginx's code for a request whose client went away before an answer was sent.
CLIENT_CLOSED = 499
UNMATCHED = "-"


class RequestObserver:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        metrics: ServiceMetrics | None,
        request_lines: RequestLines | None,
    ):
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.request_lines = request_lines  # None: VAE_LOG_FORMAT=text, uvicorn logs requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = accepted_request_id(value)
                break
        record = RequestRecord(request_id or new_request_id())
        record.arrived = asyncio.get_running_loop().time()
        id_header = (REQUEST_ID_HEADER, record.request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        token = enter_request(record)
        metrics = self.metrics
        if metrics is not None:
            metrics.active += 1
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if record.status is None:
                record.status = CLIENT_CLOSED
            raise
        except BaseException:
            if record.status is None:
                record.status = 500  # uvicorn answers 500 for an app that raised
            raise
        finally:
            leave_request(token)
            if metrics is not None:
                metrics.active -= 1
            self._finish(scope, record, time.perf_counter() - started)

    def _finish(self, scope: Scope, record: RequestRecord, seconds: float) -> None:
        route = record.route or self._route_template(scope, record.status)
        if self.metrics is not None:
            self.metrics.record_request(record, route, seconds)
        # Checked here, not in the logging call: a disabled line then costs no dict at all.
        if self.request_lines is not None and access_log.isEnabledFor(logging.INFO):
            self.request_lines.add(scope, record, route, seconds)

    def _route_template(self, scope: Scope, status: int | None) -> str:
        """The template of the route that answered (Starlette leaves it in the scope), or, for
        an answer given before routing (an API key refusal, a CORS preflight), of the route
        the request was for. Never the raw path: labels must stay few."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        if status == 404:
            return UNMATCHED
        for candidate in self.routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                template = getattr(candidate, "path", None)
                return template if isinstance(template, str) else UNMATCHED
        return UNMATCHED
