"""Container health probe: `python -m service.server.healthcheck [/healthz|/readyz]`, exit 0 if 200.

A module rather than an inline `python -c "..."` because compose implementations differ in how
they quote a healthcheck's arguments; a command with no quotes or spaces inside its words
survives all of them. Standard library only, so it never imports the service itself.

With API keys configured and the health routes taken out of VAE_AUTH_OPEN_PATHS, the probe
sends the first key of VAE_API_KEYS.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/healthz"
    url = f"http://127.0.0.1:{os.environ.get('VAE_PORT', '8000')}{path}"
    request = urllib.request.Request(url)
    keys = [k.strip() for k in os.environ.get("VAE_API_KEYS", "").split(",") if k.strip()]
    if keys and keys[0].lower() != "none":
        request.add_header("X-API-Key", keys[0])
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
