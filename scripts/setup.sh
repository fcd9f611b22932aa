#!/usr/bin/env bash
# Create .venv and install nla_lens with every extra. torch==2.13.0 first: it is the
# CPU build on local disk; an unpinned torch would pull several GB of CUDA wheels.
# A second run with nothing changed (same pyproject.toml, constraints, this script and
# Python) returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.nla_lens_setup
want=$( (cat pyproject.toml scripts/constraints.txt scripts/setup.sh; "$PY" --version) | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
  .venv/bin/python -c "import nla_lens" 2>/dev/null; then
  echo "setup: .venv is up to date (nothing changed since the last install)"
  exit 0
fi
t0=$SECONDS
step() { echo "setup: [$1/4] $2 ($((SECONDS - t0))s)"; }
step 1 "creating .venv with $("$PY" --version)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
step 2 "installing torch 2.13.0 (CPU build)"
.venv/bin/python -m pip install -q "torch==2.13.0"
# constraints.txt pins the versions the suite was verified with (pip freeze of a passing run).
step 3 "installing nla_lens and its extras (transformers, TransformerLens, nnsight, test tools)"
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[all,test]"
step 4 "checking the install"
.venv/bin/python -c "import nla_lens, transformers, torch; print('setup: nla_lens', nla_lens.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
echo "$want" > "$stamp"
echo "setup: done in $((SECONDS - t0))s"
