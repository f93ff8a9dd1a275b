"""Copies each inference request's body and its answer for the payload logger
(service.observability.payload_log), when VAE_PAYLOAD_LOG_URL is set: an ASGI layer inside the
request observer, around every array route (native and v2, fast path or not).

Each body is copied only up to VAE_PAYLOAD_LOG_MAX_BYTES; past it the copy stops and the event
goes without data. Other requests pass through untouched.
"""

from __future__ import annotations

from service.api.routes import match
from service.asgi import ASGIApp, Message, Receive, Scope, Send
from service.observability.payload_log import Exchange, PayloadLogger
from service.observability.request_context import current_request


class _Copy:
    """A body's chunks up to `limit` bytes; None once it went past."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] | None = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        if self.parts is None or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.parts = None  # the copy so far goes: the event carries no data
            return
        self.parts.append(chunk)

    def body(self) -> bytes | None:
        return None if self.parts is None else b"".join(self.parts)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return "application/octet-stream"


class PayloadCapture:
    def __init__(self, app: ASGIApp, logger: PayloadLogger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or match(scope["path"]) is None:
            await self.app(scope, receive, send)
            return
        route = match(scope["path"])
        assert route is not None
        limit = self.logger.max_bytes
        asked, answered = _Copy(limit), _Copy(limit)
        answer_type = "application/octet-stream"

        async def copying_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                asked.add(message.get("body", b""))
            return message

        async def copying_send(message: Message) -> None:
            nonlocal answer_type
            if message["type"] == "http.response.start":
                answer_type = _header(list(message.get("headers", ())), b"content-type")
            elif message["type"] == "http.response.body":
                answered.add(message.get("body", b""))
            await send(message)

        await self.app(scope, copying_receive, copying_send)
        record = current_request()
        if record.model is None or record.status is None:
            return  # no model resolved (404, 401, ...): nothing of an inference to log
        self.logger.submit(
            Exchange(
                request_id=record.request_id,
                model=record.model,
                version=record.version or "",
                route=route[0].template,
                status=record.status,
                request_type=_header(list(scope["headers"]), b"content-type"),
                request_body=asked.body(),
                response_type=answer_type,
                response_body=answered.body(),
            )
        )
