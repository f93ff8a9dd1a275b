"""The admin routes: POST /admin/reload, which reloads the model repository on every worker
(`service.dataplane.reload` does the work; this is its HTTP face and its OpenAPI description)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from service.api.openapi import ERROR_BODY
from service.api.responses import json_response
from service.dataplane.reload import Reloader, WorkerSignals
from service.dataplane.state import ServiceState

_REFUSED_ENTRY = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "loaded_copy_serves": {
            "type": "boolean",
            "description": "true: these files changed in place and were refused; the copy "
            "loaded before they changed goes on serving until the process restarts",
        },
    },
}
_KEYS = {"type": "array", "items": {"type": "string", "description": "name/version"}}
RELOAD_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["reloaded", "unchanged"]},
        "loaded": {**_KEYS, "description": "new bundles, validated and warmed up"},
        "replaced": {**_KEYS, "description": "bundles whose files changed and validated"},
        "unloaded": {**_KEYS, "description": "bundles whose folder is gone"},
        "kept": {**_KEYS, "description": "loaded copies that go on serving"},
        "refused": {
            "type": "object",
            "additionalProperties": _REFUSED_ENTRY,
            "description": "every bundle on disk that does not serve from its files, and why",
        },
        "served": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "model -> version its unversioned routes serve",
        },
        "default_model": {"type": ["string", "null"]},
        "seconds": {"type": "number"},
        "worker": {"type": "object", "description": "the worker that answered"},
        "others": {
            "type": "object",
            "description": "the server's other workers: signalled, their reports (the same "
            "fields under result), and pending (none after a 200)",
        },
    },
}
RELOAD_EXAMPLE: dict[str, Any] = {
    "status": "reloaded",
    "loaded": ["digits-vae/2"],
    "replaced": [],
    "unloaded": [],
    "kept": ["digits-vae/1"],
    "refused": {
        "digits-vae/3": {
            "reason": "models/digits-vae/3/encoder.onnx: sha256 0b5c2a7d91e4... does not "
            "match model.json (8f1d6e3a0c22...)",
            "loaded_copy_serves": False,
        }
    },
    "served": {"digits-vae": "2"},
    "default_model": "digits-vae",
    "seconds": 0.41,
    "worker": {"id": "4242-a1b2c3", "pid": 4242},
    "others": {
        "signalled": True,
        "generation": 3,
        "reports": {"4243-d4e5f6": {"ok": True, "generation": 3, "result": "..."}},
        "pending": [],
    },
}
RELOAD_DESCRIPTION = """\
Looks at the model repository again and swaps in what changed, without a restart:

- a new `<name>/<version>/` bundle is validated (schema, sha256 of each graph), loaded and
  warmed up in the background, then served; the unversioned routes move to it when it is the
  newest (or pinned) version;
- a bundle that fails validation is refused (listed under `refused` with the reason) and the
  versions served before go on serving;
- a loaded version whose files were changed in place is reloaded when they validate; when they
  do not, it is refused and its loaded copy goes on serving (`loaded_copy_serves`) until the
  process restarts;
- a bundle whose folder is gone is unloaded;
- if the result would serve nothing, or not `VAE_DEFAULT_MODEL` or a pinned version, the whole
  reload is refused (409) and nothing changes.

Requests already running finish on the model they started with. Every worker of the server
reloads: this one at once, the others on a signal; the answer comes when all have reported
(200), or 409 if one refused, or 503 `reload_incomplete` if one did not report in time.
"""


def register_reload_routes(
    app: FastAPI, state: ServiceState, reload_dir: Path | None = None
) -> Reloader:
    """POST /admin/reload; the returned Reloader is started and stopped by the lifespan."""
    signals = WorkerSignals(reload_dir) if reload_dir is not None else None
    reloader = Reloader(state, signals)

    @app.post(
        "/admin/reload",
        tags=["admin"],
        summary="Reload the model repository on every worker",
        description=RELOAD_DESCRIPTION,
        response_class=Response,
        responses={
            200: {
                "description": "every worker reloaded (or found nothing to change)",
                "content": {
                    "application/json": {
                        "schema": RELOAD_RESPONSE_SCHEMA,
                        "example": RELOAD_EXAMPLE,
                    }
                },
            },
            409: {
                "description": "reload refused (`reload_refused`): the models loaded before go "
                "on serving; `detail` holds what they serve and the other workers' reports",
                "content": {"application/json": {"schema": ERROR_BODY}},
            },
            503: {
                "description": "still starting (`not_ready`), or a worker did not report in "
                "time (`reload_incomplete`)",
                "content": {"application/json": {"schema": ERROR_BODY}},
            },
        },
    )
    async def reload_repository() -> Response:
        return json_response(await reloader.reload_everywhere())

    return reloader
