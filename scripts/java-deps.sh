#!/usr/bin/env bash
# Install the Java runtime that Spark's local mode runs on (tests/batch_scoring/test_spark.py,
# `vae-score --engine spark`): Spark 4 needs Java 17 or 21. Debian's headless JRE, from the
# distribution's mirror. Idempotent: does nothing when a java of 17 or newer is already there.
# Needs root (CI runs as root) or sudo.
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ "${version:-0}" -ge 17 ]; then
    echo "java-deps: Java ${version} already installed"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "java-deps: no apt-get here; install Java 17 or 21 yourself (Spark 4 needs one)" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
echo "java-deps: installed $(java -version 2>&1 | head -1)"
