#!/usr/bin/env bash
# Creates .venv with the pinned requirements and builds charrnn_fast in place.
# Idempotent: reinstalls nothing that is already there, and rebuilds the
# extension only when a source under csrc/ (or setup.py) is newer than it.
# CHARRNN_FAST_CUDA=0|1 forces the CUDA sources off or on (default: on when
# torch is a CUDA build and nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch, triton, pytest_benchmark, matplotlib" 2>/dev/null \
   || ! [ -x .venv/bin/ruff ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | quiet
fi
so=$(ls charrnn_fast/_C*.so 2>/dev/null | head -1 || true)
if [ -z "$so" ] || [ -n "$(find csrc setup.py -newer "$so" -type f | head -1)" ] \
   || ! [ -x .venv/bin/charrnn-fast ]; then
  echo "building charrnn_fast (CHARRNN_FAST_CUDA=${CHARRNN_FAST_CUDA:-auto}) ..."
  MAX_JOBS=${MAX_JOBS:-2} .venv/bin/pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps -e . 2>&1 | quiet
fi
.venv/bin/python -c "import charrnn_fast._C"
