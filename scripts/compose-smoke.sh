#!/usr/bin/env bash
# Bring the service up through docker-compose.yml (docker compose or podman-compose), wait for
# its healthcheck and /readyz, call every endpoint, then stop it and check a clean exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/compose-command.sh
. scripts/compose-command.sh compose-smoke  # sets engine and compose, or skips
project="vaesmoke$$"
VAE_PUBLISH_PORT=$(python3 scripts/smoke_hygiene.py port --default 18081 \
  --wanted "${SMOKE_COMPOSE_PORT:-}")
VAE_PUBLISH_GRPC_PORT=$(python3 scripts/smoke_hygiene.py port --default 18092 \
  --wanted "${SMOKE_COMPOSE_GRPC_PORT:-}")
export VAE_PUBLISH_PORT VAE_PUBLISH_GRPC_PORT
base="http://127.0.0.1:$VAE_PUBLISH_PORT"
down() { compose_down "$project"; }
trap down EXIT

echo "== ${compose[*]} up -d --build, as docs/deployment.md says (project $project, port $VAE_PUBLISH_PORT)"
data_before=$(test -e data && echo yes || echo no)
"${compose[@]}" -p "$project" up -d --build >/tmp/vae-compose-up.log 2>&1 \
  || { tail -40 /tmp/vae-compose-up.log; exit 1; }
containers=$("$engine" ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}}')
echo "containers: $containers"
# issue 19: a plain `up` starts the service alone (no trainer, no torch image built) and
# leaves no root-owned folder in the checkout
[ "$(echo "$containers" | wc -l)" = 1 ] || { echo "FAIL: up started more than the service"; exit 1; }
if grep -qi "vae-service-train\|download.pytorch.org" /tmp/vae-compose-up.log; then
  echo "FAIL: up built or pulled the training image"; exit 1
fi
[ "$data_before" = yes ] || [ ! -e data ] || { echo "FAIL: up created ./data"; exit 1; }
echo "  ok   one container, no training image, no ./data"
container=$containers
for _ in $(seq 1 300); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "$base/readyz" || { "$engine" logs "$container"; exit 1; }
echo

echo "== healthcheck"
health=""
for _ in $(seq 1 40); do
  "$engine" healthcheck run "$container" >/dev/null 2>&1 || true  # podman: run it now
  health=$("$engine" inspect "$container" --format '{{.State.Health.Status}}' 2>/dev/null || true)
  [ "$health" = healthy ] && break
  sleep 1
done
[ "$health" = healthy ] || { echo "FAIL: health is '$health'"; exit 1; }
echo "  ok   compose healthcheck: $health"
mounts=$("$engine" inspect "$container" --format '{{range .Mounts}}{{.Destination}} rw={{.RW}} {{end}}')
echo "  mounts: $mounts"
case "$mounts" in *"/models rw=false"*) echo "  ok   model repository mounted read-only";;
  *) echo "FAIL: /models is not a read-only mount"; exit 1;; esac

echo "== endpoints"
python3 scripts/smoke_endpoints.py "$base"
"${PYTHON:-.venv/bin/python}" scripts/smoke_grpc.py "127.0.0.1:$VAE_PUBLISH_GRPC_PORT"

echo "== stop (SIGTERM)"
"${compose[@]}" -p "$project" stop >/dev/null 2>&1
code=$("$engine" inspect "$container" --format '{{.State.ExitCode}}')
"$engine" logs "$container" 2>&1 | tail -4
[ "$code" = "0" ] || { echo "FAIL: exit code $code after stop"; exit 1; }
echo "  ok   clean exit (0) after SIGTERM"
echo "compose smoke passed"
