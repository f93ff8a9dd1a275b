#!/usr/bin/env bash
# Several replicas behind the nginx balancer (deploy/compose/docker-compose.replicas.yml),
# for real: build both images, bring them up on 127.0.0.1, then
#   1. spread   - a few hundred requests; every replica must answer its share;
#   2. kill     - steady load; one replica is SIGKILLed mid-run; no request may fail;
#   3. rejoin   - the killed replica is started again (on a new address): it must get traffic
#                 again, with no change to the balancer;
#   4. stop     - steady load; another replica is stopped gracefully (SIGTERM, drain); no
#                 request may fail.
# Every answer is checked byte for byte against a reference (scripts/replica_load.py).
# Prints the figures; exits 1 on any failure. Tears everything down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/compose-command.sh
. scripts/compose-command.sh replicas-smoke  # sets engine and compose, or skips
started=$(date +%s)
project="vaerepl$$"
file=deploy/compose/docker-compose.replicas.yml
LB_PUBLISH_PORT=$(python3 scripts/smoke_hygiene.py port --default 18082 \
  --wanted "${SMOKE_REPLICAS_PORT:-}")
export LB_PUBLISH_PORT
export VAE_REPLICAS="${SMOKE_REPLICAS:-3}"
base="http://127.0.0.1:$LB_PUBLISH_PORT"
rate="${SMOKE_REPLICAS_RATE:-400}"  # requests/s under load: steady, not all the CPU there is
out="${SMOKE_REPLICAS_OUT:-/tmp/vae-replicas-smoke}"
mkdir -p "$out"
down() { compose_down "$project" -f "$file"; }
trap down EXIT

format=(); [ "$engine" = podman ] && format=(--format docker)  # keeps HEALTHCHECK in the image
echo "== building vae-service:latest and vae-service-lb:latest with $engine"
t0=$(date +%s)
"$engine" build "${format[@]}" --target serve -t vae-service:latest . >"$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
"$engine" build "${format[@]}" -t vae-service-lb:latest deploy/compose/lb >>"$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
echo "  built in $(( $(date +%s) - t0 )) s"

echo "== ${compose[*]} up: $VAE_REPLICAS replicas + lb (project $project, $base)"
"${compose[@]}" -f "$file" -p "$project" up -d >"$out/up.log" 2>&1 || { tail -40 "$out/up.log"; exit 1; }
containers() {  # the containers of one service of this project, by name
  "$engine" ps -a --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | sort
}
address() { "$engine" inspect "$1" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'; }
ready() { "$engine" exec "$1" python -m service.server.healthcheck /readyz >/dev/null 2>&1; }
wait_ready() {  # every replica named answers /readyz, within 60 s
  for _ in $(seq 1 120); do
    local all=1
    for c in "$@"; do ready "$c" || { all=0; break; }; done
    [ "$all" = 1 ] && return 0
    sleep 0.5
  done
  echo "FAIL: not ready within 60 s: $*"; for c in "$@"; do "$engine" logs "$c" 2>&1 | tail -5; done
  return 1
}
mapfile -t replicas < <(containers vae-service)
lb=$(containers lb)
[ "${#replicas[@]}" = "$VAE_REPLICAS" ] || { echo "FAIL: ${#replicas[@]} replicas, wanted $VAE_REPLICAS"; exit 1; }
t0=$(date +%s.%N)
wait_ready "${replicas[@]}"
for _ in $(seq 1 60); do curl -fsS "$base/lb/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "$base/readyz" >/dev/null || { "$engine" logs "$lb"; exit 1; }
python3 -c "print(f'  all replicas ready and reachable through the lb in {$(date +%s.%N) - $t0:.1f} s')"

echo "== the containers"
uid=$("$engine" exec "$lb" id -u)
[ "$uid" != 0 ] || { echo "FAIL: the lb runs as root"; exit 1; }
echo "  ok   lb runs as uid $uid"
for c in "$lb" "${replicas[@]}"; do
  [ "$("$engine" inspect "$c" --format '{{.HostConfig.ReadonlyRootfs}}')" = true ] \
    || { echo "FAIL: $c has a writable root filesystem"; exit 1; }
done
echo "  ok   every container has a read-only root filesystem"
ports=$("$engine" port "$lb")
# e.g. "8080/tcp -> 127.0.0.1:18082": every published address must be the loopback one
if [ -z "$ports" ] || grep -qv -- "-> 127.0.0.1:" <<<"$ports"; then
  echo "FAIL: lb published as '$ports'"; exit 1
fi
for c in "${replicas[@]}"; do
  [ -z "$("$engine" port "$c")" ] || { echo "FAIL: replica $c publishes a port"; exit 1; }
done
echo "  ok   only the lb is published, on $ports"
"$engine" exec "${replicas[0]}" sleep 0 \
  || { echo "FAIL: no sleep in the serving image (deploy/k8s preStop runs it)"; exit 1; }
echo "  ok   the serving image has sleep (the Kubernetes preStop hook)"

short() { echo "replica${1##*[_-]}"; }  # project_vae-service_2 -> replica2
names() {  # --replica NAME=ADDRESS for every running replica
  for c in "${replicas[@]}"; do
    a=$(address "$c")
    if [ -n "$a" ]; then echo "--replica $(short "$c")=$a"; fi
  done
}
load() { python3 scripts/replica_load.py "$base" "$@"; }

echo "== 1. spread: 300 requests, 4 threads"
# shellcheck disable=SC2046  # one word per flag
load --requests 300 --threads 4 --expect-all --min-share 0.5 $(names) --json-out "$out/spread.json"

victim="${replicas[1]}"
victim_address=$(address "$victim")
echo "== 2. kill: $rate requests/s for 20 s, SIGKILL $victim at 7 s"
# shellcheck disable=SC2046
load --seconds 20 --threads 4 --rate "$rate" $(names) \
  --event-at 7 --event "$engine kill --signal KILL $victim" --expect-gone "$(short "$victim")" \
  --json-out "$out/kill.json"

echo "== 3. rejoin: start $victim again"
"$engine" start "$victim" >/dev/null
t0=$(date +%s.%N)
wait_ready "$victim"
python3 -c "print(f'  $victim ready again in {$(date +%s.%N) - $t0:.1f} s, at $(address "$victim") (was $victim_address)')"
# shellcheck disable=SC2046
load --requests 300 --threads 4 --expect-all --min-share 0.5 $(names) --json-out "$out/rejoin.json"

stopped="${replicas[2]}"
echo "== 4. stop: $rate requests/s for 12 s, graceful stop (SIGTERM) of $stopped at 4 s"
# shellcheck disable=SC2046
load --seconds 12 --threads 4 --rate "$rate" $(names) \
  --event-at 4 --event "$engine stop --time 30 $stopped" --expect-gone "$(short "$stopped")" \
  --json-out "$out/stop.json"
code=$("$engine" inspect "$stopped" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || { echo "FAIL: $stopped exited $code after SIGTERM"; exit 1; }
echo "  ok   $stopped drained and exited 0"

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
rows = []
for phase in ("spread", "kill", "rejoin", "stop"):
    s = json.load(open(f"{out}/{phase}.json"))
    spread = s.get("per_replica") or {
        "before": s.get("per_replica_before_event"), "after": s.get("per_replica_after_event")}
    event = s.get("event")
    when = f"  event done at {event['returned_at_s']} s" if event else ""
    rows.append(f"  {phase:7} requests {s['requests']:6}  failed {s['failures']}  "
                f"retried {s['retried']:3}  {s['requests_per_s']}/s  p99 "
                f"{s['latency_ms']['p99']} ms  max {s['latency_ms']['max']} ms{when}\n"
                f"          per replica {spread}")
print("== figures (" + out + "/*.json)")
print("\n".join(rows))
EOF
echo "replicas smoke passed in $(( $(date +%s) - started )) s"
