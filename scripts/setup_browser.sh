#!/usr/bin/env bash
# Headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`) for the tests
# that render nla_lens's pages and drive the explorer in a real browser (Selenium).
# Skipped when both are already on PATH.
set -euo pipefail
if { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } &&
  command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "setup_browser: installing Debian's chromium and chromium-driver for the browser tests"
SUDO=""
[ "$(id -u)" = "0" ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null 2>&1
command -v chromedriver >/dev/null 2>&1
