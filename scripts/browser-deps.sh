#!/usr/bin/env bash
# Install the headless browser the web page's end-to-end test drives (tests/e2e/test_web_page.py):
# Debian's chromium, found by Playwright through executable_path. Playwright's own browser
# download (`playwright install`) is never used: the test machines reach Debian's mirror, not
# Playwright's CDN, and a distribution package gets security updates with the rest of the system.
# Idempotent: does nothing when chromium is already there. Needs root (CI runs as root).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "browser-deps: $(chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser-deps: no apt-get here; install Chromium yourself and set VAE_TEST_CHROMIUM" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# fonts-dejavu-core: text in the screenshots renders with a real font instead of boxes.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "browser-deps: installed $(chromium --version 2>/dev/null || echo chromium)"
