#!/usr/bin/env bash
# Print the container engine to use: docker when its daemon answers, else podman (set up from
# ../shared/tools/container-engine.sh when that is here). Prints nothing when neither can run.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo docker; exit 0
fi
setup="$here/../shared/tools/container-engine.sh"
if [ -x "$setup" ] || [ -f "$setup" ]; then
  bash "$setup" >&2 || true
fi
if command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
  echo podman; exit 0
fi
exit 0
