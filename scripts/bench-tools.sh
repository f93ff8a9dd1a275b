#!/usr/bin/env bash
# Install what the gRPC benchmark's client needs beyond the venv (bench/perf_analyzer.py):
# Triton's perf_analyzer (in tritonclient's wheel, .venv/bin/perf_analyzer) links libb64, which
# Debian packages as libb64-0d; its libcudart.so.12 comes from the bench extra's
# nvidia-cuda-runtime-cu12 wheel. Idempotent: does nothing when libb64 is there. Needs root or
# sudo (CI runs as root).
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then
  echo "bench-tools: libb64 already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-tools: no apt-get here; install libb64 (libb64.so.0d) yourself" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
echo "bench-tools: installed libb64-0d"
