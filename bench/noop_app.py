"""The HTTP stack's own ceiling: FastAPI on uvicorn (uvloop + httptools), one route that reads
nothing and answers a tiny JSON.

    uvicorn bench.noop_app:app --loop uvloop --http httptools --port 8002
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI(title="noop")

BODY = b'{"ok":true}'


@app.post("/noop")
async def noop() -> Response:
    return Response(BODY, media_type="application/json")
