#!/bin/sh
# Start nginx (nginx.conf) with what only the running container knows: its DNS server, which
# nginx's run-time resolver must be given by address, and the replicas' name and port.
set -eu
upstream="${LB_UPSTREAM:-vae-service:8000}"
nameserver=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)
if [ -z "$nameserver" ]; then
  echo "lb: no nameserver in /etc/resolv.conf" >&2
  exit 1
fi
case "$nameserver" in *:*) nameserver="[$nameserver]";; esac
mkdir -p /tmp/nginx
cat > /tmp/nginx/runtime.conf <<CONF
resolver $nameserver valid=1s ipv6=off;
map \$host \$vae_upstream { default "$upstream"; }
CONF
echo "lb: replicas at $upstream, resolved through $nameserver" >&2
# exec: nginx becomes PID 1 and gets the stop signal itself (SIGQUIT: graceful, see Dockerfile).
exec nginx -e stderr -c /etc/nginx/nginx.conf -g "daemon off;"
