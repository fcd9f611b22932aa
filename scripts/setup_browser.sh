#!/usr/bin/env bash
# Headless Chromium (Debian's `chromium` package) for the tests that render nla_lens's HTML
# pages in a real browser. Skipped when a chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
echo "setup_browser: installing Debian's chromium for the browser tests"
SUDO=""
[ "$(id -u)" = "0" ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1
