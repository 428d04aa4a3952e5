#!/usr/bin/env bash
# One-call check on a GPU machine: build the extension in place, record the
# environment, run the CUDA and Triton tests, compute-sanitizer (memcheck and
# racecheck) on a small case, and bench/run.py when it exists.
#
#   bash bench/gpu_check.sh OUT_DIR
#
# Every step runs even when an earlier one failed; each has a time limit, and
# all of them together stay within GPU_CHECK_BUDGET seconds (default 570, for a
# 10-minute device call). Writes at most 8 files to OUT_DIR:
#   summary.txt          one line per step: name, exit status, seconds
#   env.txt              nvidia-smi, versions, device properties, kernel plans
#   build_sanitize.log   build output, then both sanitizer runs
#   pytest.log           pytest -m cuda, then pytest -m triton
#   results.json, results.csv, speedup.png, bench.md   from bench/run.py
# Exit status: 0 when every step exited 0. Extra arguments for bench/run.py can
# be passed in BENCH_ARGS (e.g. BENCH_ARGS="--quick"); GPU_CHECK_ONLY picks steps.
set -u -o pipefail

OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}  # on the GPU machines python3 is the one with torch
BUDGET=${GPU_CHECK_BUDGET:-570}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
BUILD_LOG=$OUT/build_sanitize.log
TEST_LOG=$OUT/pytest.log
: >"$SUMMARY"
: >"$BUILD_LOG"
: >"$TEST_LOG"
FAILED=0

# step NAME MAX_SECONDS LOG CMD...: run CMD under min(MAX, budget left), output
# appended to LOG (and echoed), exit status recorded in summary.txt.
# GPU_CHECK_ONLY="build,bench" runs only the named steps (a second call on a
# warm machine, say, to give bench/run.py the whole budget).
step() {
  local name=$1 max=$2 log=$3
  shift 3
  if [[ -n "${GPU_CHECK_ONLY:-}" && ",$GPU_CHECK_ONLY," != *",$name,"* ]]; then
    echo "$name not requested (GPU_CHECK_ONLY=$GPU_CHECK_ONLY)" | tee -a "$SUMMARY"
    return
  fi
  local left=$((BUDGET - ($(date +%s) - START)))
  local limit=$((max < left ? max : left))
  if ((limit < 10)); then
    echo "$name skipped: time budget spent" | tee -a "$SUMMARY"
    FAILED=1
    return
  fi
  echo "===== $name (limit ${limit}s): $*" | tee -a "$log"
  local t0
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=$?
  ((rc == 124)) && echo "===== $name: timed out after ${limit}s" | tee -a "$log"
  echo "$name rc=$rc $(($(date +%s) - t0))s" | tee -a "$SUMMARY"
  ((rc != 0)) && FAILED=1
}

env_report() {
  nvidia-smi || true
  echo "--- python: $($PY --version 2>&1)"
  $PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda); \
print(torch.cuda.get_device_properties(0) if torch.cuda.is_available() else 'no cuda')"
  $PY -c "import triton; print('triton', triton.__version__)" || true
  nvcc --version || "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version || true
  "$SANITIZER" --version || true
  git rev-parse HEAD 2>/dev/null || echo "(no git metadata)"
}

plans_report() {
  $PY - <<'EOF'
import torch
import charrnn_fast  # noqa: F401  (loads the ops)

print("--- cuda_plan (auto path and geometry) per (dtype, B, H)")
for dt in (torch.float32, torch.bfloat16, torch.float16):
    for B, H in ((1, 256), (64, 512), (64, 1024), (256, 1024), (64, 2048)):
        gx = torch.empty(8, B, 4 * H, device="cuda", dtype=dt)
        w = torch.empty(4 * H, H, device="cuda", dtype=dt)
        print(f"{str(dt):15s} B={B:3d} H={H:4d} {torch.ops.charrnn_fast.cuda_plan(gx, w)}")
EOF
}

# Triton: the kernel path and tiles kernels/plan.py picks per (dtype, B, H), to
# read next to the bench results (a forced path: CHARRNN_FAST_TRITON_PATH).
triton_plans_report() {
  $PY - <<'EOF'
import torch
from charrnn_fast.kernels.plan import make_plan

print("--- triton plan (kernels/plan.py) per (dtype, B, H)")
for dt in (torch.float32, torch.bfloat16, torch.float16):
    for B, H in ((1, 256), (64, 512), (64, 1024), (256, 1024), (64, 2048)):
        print(f"{str(dt):15s} B={B:3d} H={H:4d} {make_plan(B, H, dt, torch.device('cuda'))}")
EOF
}

SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
export PY SANITIZER
export -f env_report plans_report triton_plans_report  # timeout runs commands, not functions: via bash -c

step env 60 "$OUT/env.txt" bash -c env_report
step build 300 "$BUILD_LOG" env MAX_JOBS=16 CHARRNN_FAST_CUDA=1 "$PY" setup.py build_ext --inplace
step plans 60 "$OUT/env.txt" bash -c plans_report
step triton_plans 60 "$OUT/env.txt" bash -c triton_plans_report
step pytest_cuda 220 "$TEST_LOG" "$PY" -m pytest -m cuda -q -rfEs --durations=10 -p no:cacheprovider tests
step pytest_triton 240 "$TEST_LOG" "$PY" -m pytest -m triton -q -rfEs -p no:cacheprovider tests
# Without the caching allocator every tensor is its own allocation, so memcheck
# sees accesses past the end of a tensor.
step memcheck 90 "$BUILD_LOG" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
  --leak-check no --error-exitcode 1 "$PY" bench/sanitize_case.py
step racecheck 120 "$BUILD_LOG" "$SANITIZER" --tool racecheck --racecheck-report analysis \
  --error-exitcode 1 "$PY" bench/sanitize_case.py
if [[ -f bench/run.py ]]; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  step bench 600 "$BUILD_LOG" bash -c "\"$PY\" bench/run.py --json \"$OUT/results.json\" \
--csv \"$OUT/results.csv\" --plot \"$OUT/speedup.png\" ${BENCH_ARGS:-} > \"$OUT/bench.md\""
else
  echo "bench skipped: bench/run.py does not exist" | tee -a "$SUMMARY"
fi
echo "total $(($(date +%s) - START))s" | tee -a "$SUMMARY"
exit $FAILED
