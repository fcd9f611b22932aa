#!/usr/bin/env bash
# Create .venv and install nla_lens with every extra. torch==2.13.0 first: it is the
# CPU build on local disk; an unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# constraints.txt pins the versions the suite was verified with (pip freeze of a passing run).
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[all,test]"
