"""JSON responses for the FastAPI routes (metadata, health, errors, the v2 protocol)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from service.codecs import media


def json_bytes(payload: dict[str, Any]) -> bytes:
    """A metadata or error body. default=str keeps odd detail values (e.g. exceptions inside
    validation errors) from turning an error response into a 500; numpy arrays are written
    natively."""
    return orjson.dumps(payload, default=str, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(
    payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json_bytes(payload), status_code=status, media_type=media.JSON_MEDIA_TYPE, headers=headers
    )
