"""Call every endpoint of a running vae-service and check the answers; exit 1 on any failure.

Usage: python scripts/smoke_endpoints.py http://127.0.0.1:8000
With SMOKE_API_KEY set, every call carries that key (X-API-Key) and a call without it must be
refused with 401. Standard library only, so it runs with any Python 3.11 on the host.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import urllib.error
import urllib.request
from typing import Any

DIGIT = [
    0,
    0,
    5,
    13,
    9,
    1,
    0,
    0,
    0,
    0,
    13,
    15,
    10,
    15,
    5,
    0,
    0,
    3,
    15,
    2,
    0,
    11,
    8,
    0,
    0,
    4,
    12,
    0,
    0,
    8,
    8,
    0,
    0,
    5,
    8,
    0,
    0,
    9,
    8,
    0,
    0,
    4,
    11,
    0,
    1,
    12,
    7,
    0,
    0,
    2,
    14,
    5,
    10,
    12,
    0,
    0,
    0,
    0,
    6,
    13,
    10,
    0,
    0,
    0,
]


API_KEY = os.environ.get("SMOKE_API_KEY", "")


def key_headers() -> dict[str, str]:
    return {"x-api-key": API_KEY} if API_KEY else {}


def call(
    base: str, path: str, body: Any = None, *, with_key: bool = True, method: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **(key_headers() if with_key else {})}
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fetch(base: str, path: str) -> tuple[int, str, str]:
    """(status, content type, text) of a GET."""
    request = urllib.request.Request(base + path, headers=key_headers())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["content-type"] or "", response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"] or "", ""


def main(base: str) -> int:
    failures: list[str] = []

    def check(label: str, condition: bool) -> None:
        print(f"  {'ok  ' if condition else 'FAIL'} {label}")
        if not condition:
            failures.append(label)

    status, body = call(base, "/healthz")
    check("GET /healthz -> 200", status == 200 and body == {"status": "ok"})
    status, body = call(base, "/healthz", method="HEAD")
    check("HEAD /healthz -> 200, no body", status == 200 and body is None)
    if API_KEY:
        status, body = call(base, "/encode", {"inputs": [DIGIT]}, with_key=False)
        check("POST /encode without the key -> 401", status == 401)
    status, body = call(base, "/readyz")
    check("GET /readyz -> 200 ready", status == 200 and body.get("status") == "ready")
    status, body = call(base, "/models")
    check("GET /models lists digits-vae", status == 200 and body["default_model"] == "digits-vae")
    status, body = call(base, "/models/digits-vae")
    check("GET /models/digits-vae", status == 200 and body["latent_dim"] == 8)
    status, body = call(base, "/encode", {"inputs": [DIGIT], "sample": True, "seed": 1})
    check("POST /encode mu, logvar, z", status == 200 and len(body["z"][0]) == 8)
    status, body = call(base, "/decode", {"latents": [[0.0] * 8]})
    check("POST /decode -> (1, 1, 8, 8)", status == 200 and len(body["outputs"][0][0]) == 8)
    status, body = call(base, "/reconstruct", {"inputs": [DIGIT]})
    check("POST /reconstruct -> 64 values", status == 200 and len(body["outputs"][0]) == 64)
    status, body = call(base, "/sample", {"n": 2, "seed": 0})
    check("POST /sample n=2", status == 200 and len(body["outputs"]) == 2)
    status, body = call(base, "/models/digits-vae/versions/1/anomaly-score", {"inputs": [DIGIT]})
    check(
        "POST /anomaly-score normal digit not flagged",
        status == 200 and body["is_anomaly"] == [False],
    )
    stripes = [16 if (i + i // 8) % 2 == 0 else 0 for i in range(64)]
    status, body = call(base, "/anomaly-score", {"inputs": [stripes]})
    check("POST /anomaly-score stripes flagged", status == 200 and body["is_anomaly"] == [True])
    status, body = call(base, "/encode", {"inputs": [[1, 2, 3]]})
    check("bad shape -> 422 error body", status == 422 and "inputs" in body["error"]["message"])
    status, body = call(base, "/models/nope/encode", {"inputs": [DIGIT]})
    check("unknown model -> 404", status == 404)
    # The web page and its files ship in the image (service/api/static/).
    page_status, page_type, page = fetch(base, "/")
    check(
        "GET / -> the web page",
        page_status == 200 and page_type.startswith("text/html") and "ui/app.js" in page,
    )
    script_status, script_type, _ = fetch(base, "/ui/app.js")
    check("GET /ui/app.js", script_status == 200 and "javascript" in script_type)

    buffer = io.BytesIO()
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 64), }"
    header += " " * (63 - len(header) % 64) + "\n"  # npy v1: header padded to 64 bytes
    buffer.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())

    buffer.write(struct.pack("<64f", *DIGIT))
    request = urllib.request.Request(
        base + "/anomaly-score",
        data=buffer.getvalue(),
        headers={
            "content-type": "application/x-npy",
            "accept": "application/x-npy",
            **key_headers(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        npy_ok = response.status == 200 and response.read().startswith(b"\x93NUMPY")
    check("npy in, npy out", npy_ok)

    print(f"{'all endpoints ok' if not failures else f'{len(failures)} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"))
