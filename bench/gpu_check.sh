#!/usr/bin/env bash
# One-call check on a GPU machine, ordered by value per second: each step
# answers one question, has its own time cap, and writes its file as it goes,
# so a call cut short still returns everything it did. bench/README.md, "The GPU
# check", says what each step answers and how long it took.
#
#   bash bench/gpu_check.sh OUT_DIR          # first contact: 9 minutes at most
#   bash bench/gpu_check.sh OUT_DIR full     # follow-up on a warm machine: the
#                                            # whole bench/run.py grid, forced-path
#                                            # sweeps of both GPU backends, micro-benchmarks
#
# Steps (cap in seconds; the caps of a mode add up to at most 540):
#   first: env 15, build 145, plans 20, smoke 60, cuda_tests 110, bench_headline 70,
#          memcheck 40, racecheck 40, triton_tests 40 + what the others left
#   full:  build 150, bench_full 210, path_sweep 120, micro 60
# Files in OUT_DIR: summary.txt (a line when a step starts, one when it ends:
# exit status and seconds), NN-<step>.log per step, bench_*.json/.md per shape.
# Without a GPU (a dry run), the steps that need one say so and skip at once.
# GPU_CHECK_ONLY=step,step runs only those steps. Exit status: 0 when every
# step that ran exited 0.
set -u -o pipefail

OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR [first|full]}
MODE=${2:-first}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PY=${PYTHON:-python3} PYTHONUNBUFFERED=1 # the GPU machines have python3, no python
BUDGET=${GPU_CHECK_BUDGET:-540}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
FAILED=0
N=0
: >"$SUMMARY"

HAVE_GPU=0
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_GPU=1
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
# pytest-timeout (the GPU image has it): one hanging test must not eat the step.
TIMEOUT_OK=0
$PY -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OK=1
per_test() { ((TIMEOUT_OK)) && echo "--timeout=$1" || true; }
export SANITIZER

# step NAME CAP NEEDS_GPU CMD...: CMD under min(CAP, budget left), output into
# NN-NAME.log as it runs, start and end lines in summary.txt.
step() {
  local name=$1 cap=$2 gpu=$3
  shift 3
  N=$((N + 1))
  local log
  log=$OUT/$(printf '%02d' $N)-$name.log
  if [[ -n "${GPU_CHECK_ONLY:-}" && ",$GPU_CHECK_ONLY," != *",$name,"* ]]; then
    echo "$name not requested (GPU_CHECK_ONLY=$GPU_CHECK_ONLY)" >>"$SUMMARY"
    return
  fi
  if ((gpu && !HAVE_GPU)); then
    echo "$name skipped: needs a CUDA GPU (torch.cuda.is_available() is False) 0s" | tee -a "$SUMMARY"
    return
  fi
  local left=$((BUDGET - ($(date +%s) - START)))
  local limit=$((cap < left ? cap : left))
  if ((limit < 5)); then
    echo "$name skipped: time budget spent" | tee -a "$SUMMARY"
    FAILED=1
    return
  fi
  echo "$name started (cap ${limit}s) at +$(($(date +%s) - START))s" >>"$SUMMARY"
  echo "===== $name (cap ${limit}s): $*" >"$log"
  local t0 rc
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && echo "===== $name: timed out after ${limit}s" >>"$log"
  echo "$name rc=$rc $(($(date +%s) - t0))s" | tee -a "$SUMMARY"
  ((rc != 0)) && FAILED=1
  return 0
}

env_report() {
  nvidia-smi || echo "(no nvidia-smi)"
  echo "--- python: $($PY --version 2>&1)"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda); \
print(torch.cuda.get_device_properties(0) if torch.cuda.is_available() else 'no cuda device')"
  $PY -c "import triton; print('triton', triton.__version__)" || true
  $PY -c "from importlib.metadata import version; print('pytest-timeout', version('pytest-timeout'))" ||
    echo "pytest-timeout: not installed (no per-test timeouts)"
  nvcc --version || "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version || true
  "$SANITIZER" --version || true
  git rev-parse HEAD 2>/dev/null || echo "(no git metadata)"
}

# The plan of every backend (path, geometry, why; charrnn_fast.backends.report)
# per (dtype, B, H): on this GPU, or on a nominal H100 without one.
plans_report() {
  $PY - <<'EOF'
import torch

from charrnn_fast import backends
from charrnn_fast.backends import plans

gpu = torch.cuda.is_available()
backends.report()
print()
for dt in (torch.float32, torch.bfloat16, torch.float16):
    for B, H in ((50, 128), (64, 512), (1, 256), (64, 1024), (256, 1024), (64, 2048)):
        backends.report(shape=(B, H), dtype=dt, limits=None if gpu else plans.H100)
        print()
EOF
}

# The headline shapes, one bench/run.py call per shape so that each one's
# results are on disk before the next starts.
bench_shapes() {
  local providers=$1
  shift
  local rc=0 s
  for s in "$@"; do
    $PY bench/run.py --providers "$providers" --shapes "$s" ${BENCH_ARGS:-} \
      --json "$OUT/bench_$s.json" --md "$OUT/bench_$s.md" || rc=1
  done
  return $rc
}

# Forced paths of both GPU backends on the headline shapes (CHARRNN_FAST_PATH),
# to set the planners' thresholds from measurements.
path_sweep() {
  local rc=0 p
  for p in cuda:persistent cuda:stepwise triton:small triton:persistent triton:stepwise; do
    echo "=== CHARRNN_FAST_PATH=$p"
    CHARRNN_FAST_PATH=$p $PY bench/run.py --providers "${p%%:*}" --shapes char-rnn,blog \
      --modes fwd,fwdbwd --dtypes fp32,bf16 --json "$OUT/sweep_${p/:/_}.json" \
      --md "$OUT/sweep_${p/:/_}.md" || rc=1
  done
  return $rc
}
export -f env_report plans_report bench_shapes path_sweep  # timeout runs commands: via bash -c
export OUT

ARCH=$($PY -c "import torch; M, m = torch.cuda.get_device_capability(); \
print(f'{M}.{m}' + ('a' if M == 9 else ''))" 2>/dev/null || echo 9.0a)
BUILD=(env MAX_JOBS=16 CHARRNN_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$ARCH}"
  "$PY" setup.py build_ext --inplace)
# shellcheck disable=SC2046  # per_test prints one word or none
case $MODE in
  first)
    step env 15 0 bash -c env_report
    step build 145 0 "${BUILD[@]}"
    step plans 20 0 bash -c plans_report
    step smoke 60 1 "$PY" bench/sanitize_case.py
    step cuda_tests 110 1 "$PY" -m pytest -v -rfEs -p no:cacheprovider $(per_test 60) \
      tests/lstm/test_cuda.py tests/lstm/test_planners.py \
      tests/lstm/test_generate.py::test_cuda_graph_chunks_give_the_eager_loops_tokens_and_state \
      tests/lstm/test_generate.py::test_cuda_uses_the_python_loop_with_the_same_tokens \
      tests/lstm/test_generate_rnn.py::test_cuda_graph_chunks_give_the_eager_loops_tokens_and_state
    step bench_headline 70 1 env BENCH_ARGS="--modes fwd,fwdbwd --dtypes fp32,bf16" \
      bash -c 'bench_shapes cudnn,cuda char-rnn blog'
    # Without the caching allocator every tensor is its own allocation, so
    # memcheck sees accesses past the end of a tensor.
    step memcheck 40 1 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
      --leak-check no --error-exitcode 1 "$PY" bench/sanitize_case.py
    step racecheck 40 1 "$SANITIZER" --tool racecheck --racecheck-report analysis \
      --error-exitcode 1 "$PY" bench/sanitize_case.py
    # Last: a barrier that hangs can only eat its own cap, which is what the
    # steps above left of the budget (at least 40 s when they all ran to their caps).
    step triton_tests "$BUDGET" 1 "$PY" -m pytest -v -rfEs -p no:cacheprovider $(per_test 30) \
      -m triton tests/lstm/test_triton.py
    ;;
  full)
    step build 150 0 "${BUILD[@]}"
    step bench_full 210 1 bash -c 'bench_shapes cudnn,cuda,triton char-rnn blog fastrnns large batch1'
    step path_sweep 120 1 bash -c path_sweep
    step micro 60 1 "$PY" -m pytest -q -p no:cacheprovider tests/bench/test_bench_micro.py \
      --benchmark-only --benchmark-json="$OUT/micro.json"
    ;;
  *)
    echo "mode must be first or full, got '$MODE'" >&2
    exit 2
    ;;
esac
((TIMEOUT_OK)) || echo "note: pytest-timeout is not installed: no per-test timeout" | tee -a "$SUMMARY"
echo "total $(($(date +%s) - START))s" | tee -a "$SUMMARY"
exit $FAILED
