#!/usr/bin/env bash
# The CPU test suite, and the Triton kernels under the interpreter, against
# the software of the GPU machines (torch 2.11.0, triton 3.6.0) instead of
# requirements.txt's pins, so that API drift shows up before GPU time is spent.
#
# A second venv (COMPAT_DIR/venv) gets the old versions; a copy of this working
# tree (COMPAT_DIR/tree: tracked and untracked, not ignored, files) is built
# there, CPU only. The copy matters: an in-place build writes
# charrnn_fast/_C*.so, which would replace the main build's extension.
# numpy stays below 2.4 (the GPU machines have 2.5): triton 3.6's interpreter
# breaks with numpy >= 2.4 (triton-lang/triton#9171; tests/lstm/test_triton.py
# skips with that message), which would hide every Triton drift.
# Usage: bash scripts/compat_check.sh [extra pytest args]
#   COMPAT_DIR   work folder (default /tmp/charrnn_compat; the venv is reused)
#   COMPAT_TORCH torch requirement (default torch==2.11.0)
set -euo pipefail
cd "$(dirname "$0")/.."
export CHARRNN_FAST_CUDA=0  # CPU-only build; tests/lstm/test_build.py reads it too
dir=${COMPAT_DIR:-/tmp/charrnn_compat}
torch_req=${COMPAT_TORCH:-torch==2.11.0}
PY=${PYTHON:-python3}
venv="$dir/venv" tree="$dir/tree"
mkdir -p "$dir"
start=$SECONDS
stamp() { echo "compat_check: $1 ($((SECONDS - start)) s)"; }

[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
want="$torch_req triton==3.6.0 numpy==2.3.* ninja pytest pytest-benchmark tqdm matplotlib"
if ! [ -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "$want" ]; then
  # shellcheck disable=SC2086  # $want is a list of requirements
  "$venv/bin/pip" install -q --disable-pip-version-check $want 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
  echo "$want" >"$venv/.installed"
fi
"$venv/bin/python" -c "import torch, triton, numpy
print('compat_check: torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
stamp "venv ready"

# A fresh copy of the working tree (files deleted here must not linger there).
rm -rf "$tree"
mkdir -p "$tree"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | tar -c --null -T - -f - | tar -x -C "$tree"
else  # not a git checkout (a source archive): everything but builds and venvs
  tar -c --exclude=./.venv --exclude=./build --exclude='*.so' --exclude=__pycache__ -f - . |
    tar -x -C "$tree"
fi
cd "$tree"
MAX_JOBS=${MAX_JOBS:-2} "$venv/bin/python" setup.py -q build_ext --inplace \
  >"$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; exit 1; }
"$venv/bin/python" -c "import charrnn_fast._C"
stamp "extension built"
PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -m "not triton and not slow" \
  --benchmark-disable -p no:cacheprovider tests "$@"
stamp "CPU suite passed"
# The Triton kernels under triton 3.6's interpreter (about a minute).
PYTHONPATH="$PWD" TRITON_INTERPRET=1 "$venv/bin/python" -m pytest -q -m triton \
  --benchmark-disable -p no:cacheprovider -W ignore::DeprecationWarning tests "$@"
stamp "done"
