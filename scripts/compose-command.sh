# Sourced (not run) by the compose smoke scripts, after `cd` to the repository root:
#   . scripts/compose-command.sh NAME
# sets `engine` (docker or podman) and `compose` (the compose command, an array), or exits
# the calling script with 0 and a loud SKIPPED line naming NAME where neither can run here;
# defines `compose_down PROJECT [compose flags]`, which also removes the project's network
# (podman-compose 1.0.3's down leaves it, and each one holds a /24 of podman's address pool).
# shellcheck shell=bash disable=SC2034  # engine and compose are for the sourcing script
engine="$(scripts/container-engine.sh)"
if [ -z "$engine" ]; then
  echo "!!! $1 SKIPPED: neither docker nor podman can run on this machine !!!" >&2
  exit 0
fi
# An earlier run killed before its EXIT trap leaves containers that hold its port and a network
# that holds an address range; clear those (only the smokes' own, and only old ones).
python3 scripts/smoke_hygiene.py reap "$engine"
if [ "$engine" = docker ] && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v podman-compose >/dev/null 2>&1; then
  compose=(podman-compose)
else
  echo "!!! $1 SKIPPED: no docker compose or podman-compose !!!" >&2
  exit 0
fi
compose_down() {
  local project="$1"; shift
  "${compose[@]}" "$@" -p "$project" down >/dev/null 2>&1 || true
  "$engine" network rm "${project}_default" >/dev/null 2>&1 || true
}
