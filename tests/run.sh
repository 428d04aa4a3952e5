#!/usr/bin/env bash
# The whole test suite, set-up included: lint, the main pytest run, the Triton
# kernels under the CPU interpreter (a separate process, since TRITON_INTERPRET
# must be set before Triton kernels are defined), the benchmark smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
# --benchmark-disable: the micro-benchmarks in tests/bench run once, as tests.
python -m pytest -m "not triton" --benchmark-disable tests
TRITON_INTERPRET=1 python -m pytest -m triton --benchmark-disable tests
python bench/run.py --quick
# The persistent CUDA kernels' logic, on the CPU (no GPU needed): the real .cu
# sources compiled with g++ against an emulation of the CUDA primitives, under
# AddressSanitizer, then the multi-slice cases under ThreadSanitizer, then a
# mutant with a relaxed grid barrier that ThreadSanitizer must catch.
if [ -f "${CUDA_HOME:-/usr/local/cuda}/include/cuda_runtime.h" ]; then
  bash csrc/cuda/emu/run.sh
  bash csrc/cuda/emu/run.sh --tsan
  bash csrc/cuda/emu/run.sh --tsan-mutant
fi
