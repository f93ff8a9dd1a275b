#!/usr/bin/env bash
# Install what the gRPC benchmark's clients need beyond the venv (bench/h2load.py,
# bench/perf_analyzer.py): h2load, the load generator of every gRPC row, is Debian's
# nghttp2-client; Triton's perf_analyzer (in tritonclient's wheel, .venv/bin/perf_analyzer)
# links libb64, which Debian packages as libb64-0d, and its libcudart.so.12 comes from the bench
# extra's nvidia-cuda-runtime-cu12 wheel; valgrind counts the instructions monitoring adds to a
# request (bench/monitor_instructions.py). Idempotent: installs only what is missing. Needs root
# or sudo (CI runs as root).
set -euo pipefail
missing=()
ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d' || missing+=(libb64-0d)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if [ ${#missing[@]} -eq 0 ]; then
  echo "bench-tools: libb64, h2load and valgrind already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-tools: no apt-get here; install ${missing[*]} yourself" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "bench-tools: installed ${missing[*]}"
