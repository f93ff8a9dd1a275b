"""Each kind sent once before the load: its status checked, its answer kept for wrk to match."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.soak.kinds import Kind


@dataclass
class Probe:
    key: str
    status: int | None
    media_type: str | None
    problem: str | None  # None: the documented status and media type


def is_error_body(body: bytes) -> bool:
    """Both error bodies: the service's {"error": {...}} and the v2 protocol's {"error": "..."}."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "error" in parsed


def probe(client: httpx.Client, kind: Kind) -> tuple[Probe, bytes]:
    try:
        response = client.request(kind.method, kind.path, content=kind.body, headers=kind.headers)
    except httpx.HTTPError as error:
        return Probe(kind.key, None, None, f"{type(error).__name__}: {error}"), b""
    media = response.headers.get("content-type", "").partition(";")[0].strip()
    problem = None
    if response.status_code != kind.status:
        problem = f"HTTP {response.status_code}, documented {kind.status}: {response.text[:300]}"
    elif media != kind.media_type:
        problem = f"Content-Type {media!r}, expected {kind.media_type!r}"
    elif not kind.valid and not is_error_body(response.content):
        problem = f"no error body: {response.text[:300]}"
    return Probe(kind.key, response.status_code, media, problem), response.content


def probe_all(base_url: str, kinds: Sequence[Kind], folder: Path) -> dict[str, Probe]:
    """Each kind once, before the load; its answer becomes the body every later one must match."""
    folder.mkdir(parents=True, exist_ok=True)
    probes: dict[str, Probe] = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        # wrk sends only the kind's own headers; httpx's defaults would make the probe differ.
        for default in ("accept", "accept-encoding", "user-agent"):
            del client.headers[default]
        for kind in kinds:
            result, body = probe(client, kind)
            probes[kind.key] = result
            (folder / f"{kind.key}.bin").write_bytes(body)
    return probes
