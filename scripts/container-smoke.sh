#!/usr/bin/env bash
# Build the serving image, run it, wait for /readyz, call every endpoint, check it runs as
# non-root without torch, send SIGTERM and check a clean exit. Prints size and cold start.
set -euo pipefail
cd "$(dirname "$0")/.."
engine="$(scripts/container-engine.sh)"
if [ -z "$engine" ]; then
  echo "!!! container-smoke SKIPPED: neither docker nor podman can run on this machine !!!" >&2
  exit 0
fi
image="vae-service:smoke"
name="vae-smoke-$$"
# Leftovers of an earlier, killed run go first; a taken port moves us to a free one (it would
# otherwise test somebody else's server). scripts/smoke_hygiene.py says what it did.
python3 scripts/smoke_hygiene.py reap "$engine"
port=$(python3 scripts/smoke_hygiene.py port --default 18080 --wanted "${SMOKE_PORT:-}")
grpc_port=$(python3 scripts/smoke_hygiene.py port --default 18091 --wanted "${SMOKE_GRPC_PORT:-}")
format=(); [ "$engine" = podman ] && format=(--format docker)  # keeps HEALTHCHECK in the image
cleanup() { "$engine" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== building $image with $engine"
"$engine" build "${format[@]}" --target serve -t "$image" . >/tmp/vae-smoke-build.log 2>&1 \
  || { tail -40 /tmp/vae-smoke-build.log; exit 1; }
size=$("$engine" image inspect "$image" --format '{{.Size}}')
echo "image size: $((size / 1000000)) MB ($size bytes)"

echo "== fail closed: the image binds 0.0.0.0, so without API keys it must refuse to start"
set +e
refusal=$("$engine" run --rm "$image" 2>&1)
code=$?
set -e
if [ "$code" != "2" ] || ! grep -q "no API keys" <<<"$refusal"; then
  echo "FAIL: without keys the container exited $code:"; echo "$refusal" | tail -5; exit 1
fi
echo "  ok   refused to start (exit 2): $(grep -o 'no API keys[^:]*' <<<"$refusal" | head -1)"

# A fresh key for this run only; smoke_endpoints.py sends it and checks a call without it fails.
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
start=$(date +%s.%N)
"$engine" run -d --name "$name" -p "127.0.0.1:$port:8000" -p "127.0.0.1:$grpc_port:8001" \
  -e "VAE_API_KEYS=$key" "$image" >/dev/null
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  if [ "$("$engine" inspect "$name" --format '{{.State.Running}}')" != "true" ]; then
    "$engine" logs "$name"; echo "container exited before ready"; exit 1
  fi
  sleep 0.1
done
ready=$(date +%s.%N)
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { "$engine" logs "$name"; exit 1; }
python3 -c "print(f'cold start to ready: {$ready - $start:.2f} s')"

echo "== endpoints"
SMOKE_API_KEY="$key" python3 scripts/smoke_endpoints.py "http://127.0.0.1:$port"
echo "== gRPC (the Open Inference Protocol on the image's port 8001)"
SMOKE_API_KEY="$key" "${PYTHON:-.venv/bin/python}" scripts/smoke_grpc.py "127.0.0.1:$grpc_port"

echo "== inside the container"
uid=$("$engine" exec "$name" id -u)
[ "$uid" != "0" ] || { echo "FAIL: runs as root"; exit 1; }
echo "  ok   runs as uid $uid ($("$engine" exec "$name" id -un))"
if "$engine" exec "$name" python -c "import torch" >/dev/null 2>&1; then
  echo "FAIL: torch is importable in the serving image"; exit 1
fi
echo "  ok   import torch fails"
if "$engine" exec "$name" sh -c 'command -v gcc || command -v cc' >/dev/null 2>&1; then
  echo "FAIL: a compiler is in the serving image"; exit 1
fi
echo "  ok   no compiler"

echo "== SIGTERM"
"$engine" kill --signal TERM "$name" >/dev/null
code=$("$engine" wait "$name" | tail -1)
"$engine" logs "$name" 2>&1 | tail -4
[ "$code" = "0" ] || { echo "FAIL: exit code $code after SIGTERM"; exit 1; }
echo "  ok   clean exit (0) after SIGTERM"
echo "container smoke passed"
