#!/usr/bin/env bash
# Set up .venv (CPU torch, offline-capable) and run the demo on the shipped toy NLA pair.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HF_HUB_OFFLINE=1 .venv/bin/nla-lens demo "$@"
