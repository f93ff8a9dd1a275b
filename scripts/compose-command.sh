# Sourced (not run) by the compose smoke scripts, after `cd` to the repository root:
#   . scripts/compose-command.sh NAME
# sets `engine` (docker or podman) and `compose` (the compose command, an array), or exits
# the calling script with 0 and a loud SKIPPED line naming NAME where neither can run here.
# shellcheck shell=bash disable=SC2034  # engine and compose are for the sourcing script
engine="$(scripts/container-engine.sh)"
if [ -z "$engine" ]; then
  echo "!!! $1 SKIPPED: neither docker nor podman can run on this machine !!!" >&2
  exit 0
fi
if [ "$engine" = docker ] && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v podman-compose >/dev/null 2>&1; then
  compose=(podman-compose)
else
  echo "!!! $1 SKIPPED: no docker compose or podman-compose !!!" >&2
  exit 0
fi
