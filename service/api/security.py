"""Optional API keys, checked in front of every route except the configured open paths.

How a key is carried and matched (hashed, compared with every configured key in constant
time, never logged) is service.dataplane.api_keys, which gRPC uses too; this is the HTTP side:
which paths are open, and the 401/403 answers in each protocol's body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import FastAPI

from service.api.openapi import ERROR_BODY, V2_ERROR_BODY
from service.asgi import ASGIApp, Receive, Scope, Send
from service.dataplane.api_keys import ApiKeys, presented_key
from service.errors import Forbidden, ServiceError, Unauthorized

# Set in the scope of a request to an open path that carried a valid key.
AUTHENTICATED = "vae.authenticated"


class ApiKeyGuard:
    """ASGI middleware: 401 without a key, 403 with a wrong one, the app otherwise."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...],
    ):
        self.app = app
        self.keys = ApiKeys(keys)
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or any(path.startswith(p) for p in self.open_prefixes)

    def allows(self, key: bytes) -> bool:
        return self.keys.allows(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        if self.is_open(scope["path"]):
            # Open to all, but a valid key still counts: /readyz shows such a caller the
            # reasons behind its states.
            if key is not None and self.allows(key):
                scope[AUTHENTICATED] = True
            await self.app(scope, receive, send)
            return
        if key is None:
            error: ServiceError = Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="vae-service"'},
            )
        elif not self.allows(key):
            error = Forbidden("the API key is not valid")
        else:
            scope[AUTHENTICATED] = True
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send, error)


async def _refuse(scope: Scope, send: Send, error: ServiceError) -> None:
    # The Open Inference Protocol has its own error body; every other route uses ours.
    payload: dict[str, Any] = (
        {"error": error.message} if scope["path"].startswith("/v2/") else error.body()
    )
    body = orjson.dumps(payload)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def document_api_keys(app: FastAPI, guard: ApiKeyGuard) -> None:
    """With keys on, the OpenAPI schema says so: both ways to send a key, and the 401/403 of
    every operation the guard protects, so generated clients and the docs page ask for one."""
    generate = app.openapi

    def secured_openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI caches this dict; editing it in place edits the cache
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path, operations in schema.get("paths", {}).items():
            if guard.is_open(path):
                continue
            body = V2_ERROR_BODY if path.startswith("/v2/") else ERROR_BODY
            refusals = {
                "401": {
                    "description": "no API key was sent",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": body}},
                },
                "403": {
                    "description": "the API key is not valid",
                    "content": {"application/json": {"schema": body}},
                },
            }
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation.setdefault("responses", {}).update(refusals)
        return schema

    app.openapi = secured_openapi  # type: ignore[method-assign]
