"""The web page at `/` and the read-only routes to a bundle's report plots.

The page is plain HTML, CSS and JavaScript in `service/api/static/` (no build step, nothing fetched
from the internet): `/` is `static/index.html`, `/ui/*` its assets. It calls the same public
JSON API as any client; this module adds only what a client could not get before, the files of
a bundle's `report/` folder:

- `GET /models/{name}/versions/{version}/report`: the servable files, with the descriptions the
  trainer wrote to `report/index.json`;
- `GET /models/{name}/versions/{version}/report/{file}`: one of them.

A file is served only if its name is one a listing of that folder returned: a plain file (no
symbolic link), a name of letters, digits, `_`, `-` and `.` that starts with a letter or digit,
and a suffix from `REPORT_MEDIA_TYPES`. The requested name is looked up among those entries and
never joined to a path on its own, so `..`, `/`, `%2F` or a link out of the folder cannot reach
anything else.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from service.api.deps import served_state
from service.api.openapi import NOT_READY, json_body, routing_errors
from service.api.responses import json_response
from service.errors import ReportFileNotFound, excerpt
from service.models.served_model import ServedModel

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/ui"  # keep in step with VAE_AUTH_OPEN_PATHS' default (service/settings.py)
REPORT_FOLDER = "report"
REPORT_INDEX = "index.json"  # {file name: description}, written by training/report_writer.py
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Only types a browser shows without running anything: no SVG or HTML, which could carry script
# into the page's origin if a bundle were ever built by someone else.
REPORT_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
}
# The page runs only its own script and style and talks only to this origin: a plot, a drawing
# or a sample is a data: or blob: URL made in the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is small and changes with the package; always revalidate so an upgrade shows.
    "Cache-Control": "no-cache",
}
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def report_files(model: ServedModel) -> dict[str, Path]:
    """Servable file name -> path, for every file of the bundle's report/ folder that passes
    the checks in the module docstring; empty when the bundle has no report/ folder."""
    folder = model.bundle.path / REPORT_FOLDER
    found: dict[str, Path] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                suffix = os.path.splitext(entry.name)[1].lower()
                if (
                    SAFE_FILE_NAME.fullmatch(entry.name)
                    and suffix in REPORT_MEDIA_TYPES
                    and entry.is_file(follow_symlinks=False)
                ):
                    found[entry.name] = folder / entry.name
    except OSError:
        return {}  # no report/ (e.g. the container image leaves plots out), or unreadable
    return dict(sorted(found.items()))


def report_descriptions(files: dict[str, Path]) -> dict[str, str]:
    """What each plot shows, from report/index.json; missing or malformed: no descriptions."""
    index = files.get(REPORT_INDEX)
    if index is None:
        return {}
    try:
        entries = json.loads(index.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {str(k): v for k, v in entries.items() if isinstance(v, str)}


def _model(request: Request, name: str, version: str) -> ServedModel:
    return served_state(request).require_ready()[0].resolve(name, version)


REPORT_FILE_ENTRY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "media_type": {"type": "string"},
        "bytes": {"type": "integer", "minimum": 0},
        "description": {"type": ["string", "null"]},
        "url": {"type": "string"},
    },
    "required": ["name", "media_type", "bytes", "description", "url"],
}
REPORT_LISTING = {
    "type": "object",
    "properties": {
        "model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        },
        "files": {"type": "array", "items": REPORT_FILE_ENTRY},
    },
    "required": ["model", "files"],
}


def register_pages(app: FastAPI) -> None:
    """`/`, the static assets under ASSETS_PATH and the two report routes."""
    # Read once, when the app is built: a package installed without its static files fails
    # at start-up, not on the first visit.
    page = (STATIC_DIR / "index.html").read_bytes()

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR / "ui"), name="ui")

    @app.get(
        "/models/{name}/versions/{version}/report",
        tags=["models"],
        summary="The plots and files in a model version's report/ folder",
        description="What `GET .../report/{file}` serves: PNG plots, report/index.json (what each "
        "plot shows) and the training log. Empty when the bundle has no report/ folder (the "
        "container image leaves them out).",
        responses={
            200: json_body("the servable report files, by name", REPORT_LISTING),
            **routing_errors(),
            503: NOT_READY,
        },
    )
    async def report_listing(request: Request, name: str, version: str) -> Response:
        model = _model(request, name, version)
        files = report_files(model)
        descriptions = report_descriptions(files)
        base = f"/models/{model.name}/versions/{model.version}/{REPORT_FOLDER}"
        listing: list[dict[str, Any]] = []
        for file, path in files.items():
            try:
                size = path.stat().st_size
            except OSError:
                continue  # removed since the folder was listed: not there to serve
            listing.append(
                {
                    "name": file,
                    "media_type": REPORT_MEDIA_TYPES[os.path.splitext(file)[1].lower()],
                    "bytes": size,
                    "description": descriptions.get(file),
                    "url": f"{base}/{file}",
                }
            )
        return json_response(
            {"model": {"name": model.name, "version": model.version}, "files": listing}
        )

    @app.get(
        "/models/{name}/versions/{version}/report/{file}",
        tags=["models"],
        summary="One file of a model version's report/ folder",
        description="A file the listing names (PNG, JSON or JSON lines); any other name, one "
        "outside the folder included, is a 404.",
        response_class=Response,
        responses={
            200: {
                "description": "the file",
                "content": {
                    media: {"schema": {}} for media in sorted(set(REPORT_MEDIA_TYPES.values()))
                },
            },
            **routing_errors(),
            503: NOT_READY,
        },
    )
    async def report_file(request: Request, name: str, version: str, file: str) -> Response:
        model = _model(request, name, version)
        path = report_files(model).get(file)
        missing = ReportFileNotFound(
            f"model {model.name!r} version {model.version!r} has no report file {excerpt(file)}",
            {"model": model.name, "version": model.version, "file": excerpt(file)},
        )
        if path is None:
            raise missing
        try:
            # Read here rather than streamed: a file removed between the listing and the read
            # is a 404, not a failed response. Report files are plots and logs of a few kB.
            content = await run_in_threadpool(path.read_bytes)
        except OSError:
            raise missing from None
        media_type = REPORT_MEDIA_TYPES[os.path.splitext(file)[1].lower()]
        return Response(content, media_type=media_type, headers=FILE_HEADERS)
