#!/usr/bin/env bash
# One-call check on a GPU machine, ordered by value per second: each step
# answers one question and has its own time cap. bench/README.md, "The GPU
# check", says what each step answers.
#
#   bash bench/gpu_check.sh OUT_DIR          # first contact: 6 minutes at most, build included
#   bash bench/gpu_check.sh OUT_DIR full     # follow-up on a warm machine: sanitizers, the
#                                            # whole bench/run.py grid, forced-path sweeps,
#                                            # micro-benchmarks (7 minutes at most)
#
# Steps (cap in seconds; a mode's caps, plus the probes before its first step,
# fit its budget: first 360, full 420):
#   first: env 15, build 115, plans 15, smoke 30, cuda_tests 75, bench_headline 55,
#          triton_tests (what the others left: at least 50)
#   full:  build 120, memcheck 45, racecheck 45, bench_full 110, path_sweep 60, micro 30
#
# What comes back: the GPU machine returns at most 8 files from OUT_DIR, at most
# two folders down. So OUT_DIR holds only
#   summary.txt   a line when a step starts, one when it ends (exit status,
#                 seconds), and the tail of the log of a step that failed;
#   logs.tar.gz   every step's full log and every other output (bench tables,
#                 sweeps), re-packed after every step (written aside, then
#                 renamed: a call cut short returns the archive of the last
#                 finished step, never a torn one);
#   *.json        the results (plans.json, bench_<shape>.json), copied up while
#                 there is room (GPU_CHECK_MAX_FILES, 7: summary + archive + 5,
#                 one left for the archive's transient copy); the rest stay in
#                 the archive, and the summary says so.
# Without a GPU (a dry run), the steps that need one say so and skip at once.
# GPU_CHECK_ONLY=step,step runs only those steps; GPU_CHECK_SKIP=step,step
# runs all but those. Exit status: 0 when every step that ran exited 0.
#
# Time bounds: every step runs under `timeout -k 5 CAP`, the only hard bound.
# pytest-timeout's default signal method cannot interrupt a test hung in a
# CUDA synchronisation (its handler runs between Python bytecodes, and the
# main thread never returns from the driver); its thread method, used here,
# dumps every thread's stack and exits the whole pytest process, which ends the
# step early with the hang's location in the log. Either way the outer
# `timeout` bounds the step.
set -u -o pipefail

OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR [first|full]}
MODE=${2:-first}
case $MODE in
  first) DEFAULT_BUDGET=360 ;;
  full) DEFAULT_BUDGET=420 ;;
  *)
    echo "mode must be first or full, got '$MODE'" >&2
    exit 2
    ;;
esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
START=$(date +%s)
export PY=${PYTHON:-python3} PYTHONUNBUFFERED=1 # the GPU machines have python3, no python
BUDGET=${GPU_CHECK_BUDGET:-$DEFAULT_BUDGET}
MAX_FILES=${GPU_CHECK_MAX_FILES:-7}
KILL_GRACE=5 # timeout -k: seconds between TERM and KILL
SUMMARY=$OUT/summary.txt
ARCHIVE=$OUT/logs.tar.gz
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") # per-step logs and outputs, packed
FAILED=0
N=0
: >"$SUMMARY"
export OUT WORK SUMMARY MAX_FILES

# One probe (torch's import is seconds, and counts against the budget): a
# GPU?, its architecture (9.0a on an H100/H200; 9.0a without one: the build
# compiles one architecture, so that it fits its cap), pytest-timeout?
read -r HAVE_GPU ARCH TIMEOUT_OK < <(timeout 60 "$PY" -c "
import importlib.util, torch
gpu = torch.cuda.is_available()
M, m = torch.cuda.get_device_capability() if gpu else (9, 0)
print(int(gpu), f'{M}.{m}' + ('a' if M == 9 else ''), int(bool(importlib.util.find_spec('pytest_timeout'))))
" 2>/dev/null || echo 0 9.0a 0)
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
per_test() { ((TIMEOUT_OK)) && echo "--timeout=$1 -o timeout_method=thread" || true; }
export SANITIZER

# keep FILE: a copy in OUT while OUT holds fewer than MAX_FILES files (FILE
# itself stays in WORK, hence in the archive).
keep() {
  local n
  n=$(find "$OUT" -type f | wc -l)
  if ((n < MAX_FILES)); then
    cp -f "$1" "$OUT/"
  else
    echo "  $(basename "$1"): in logs.tar.gz only ($MAX_FILES files in OUT_DIR already)" >>"$SUMMARY"
  fi
}

# The archive of WORK, written aside and renamed into place.
pack() {
  tar -czf "$ARCHIVE.part" -C "$WORK" . 2>/dev/null && mv -f "$ARCHIVE.part" "$ARCHIVE"
  rm -f "$ARCHIVE.part"
}
export -f keep
pack # the archive holds its place in OUT from the start

listed() { [[ ",$1," == *",$2,"* ]]; }

# step NAME CAP NEEDS_GPU CMD...: CMD under min(CAP, budget left), output into
# WORK/NN-NAME.log, start and end lines in summary.txt, then the archive.
step() {
  local name=$1 cap=$2 gpu=$3
  shift 3
  N=$((N + 1))
  local log
  log=$WORK/$(printf '%02d' $N)-$name.log
  if [[ -n "${GPU_CHECK_ONLY:-}" ]] && ! listed "$GPU_CHECK_ONLY" "$name" ||
    listed "${GPU_CHECK_SKIP:-}" "$name"; then
    echo "$name not requested (GPU_CHECK_ONLY=${GPU_CHECK_ONLY:-} GPU_CHECK_SKIP=${GPU_CHECK_SKIP:-})" >>"$SUMMARY"
    return
  fi
  if ((gpu && !HAVE_GPU)); then
    echo "$name skipped: needs a CUDA GPU (torch.cuda.is_available() is False) 0s" | tee -a "$SUMMARY"
    return
  fi
  # The step and its kill grace end within the budget.
  local left=$((BUDGET - ($(date +%s) - START) - KILL_GRACE))
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
  timeout -k "$KILL_GRACE" "$limit" "$@" >>"$log" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && echo "===== $name: timed out after ${limit}s" >>"$log"
  echo "$name rc=$rc $(($(date +%s) - t0))s" | tee -a "$SUMMARY"
  if ((rc != 0)); then
    FAILED=1
    tail -n 15 "$log" | sed 's/^/  | /' >>"$SUMMARY"
  fi
  pack
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
# per (dtype, B, H): on this GPU, or on a nominal H100 without one. The same
# lines go to WORK/plans.json, kept in OUT.
plans_report() {
  $PY - <<'EOF' && keep "$WORK/plans.json"
import json, os

import torch

from charrnn_fast import backends
from charrnn_fast.backends import plans

gpu = torch.cuda.is_available()
backends.report()
print()
rows = []
for dt in (torch.float32, torch.bfloat16, torch.float16):
    for B, H in ((50, 128), (64, 512), (1, 256), (64, 1024), (256, 1024), (64, 2048)):
        text = backends.report(shape=(B, H), dtype=dt, limits=None if gpu else plans.H100)
        rows.append({"dtype": str(dt), "B": B, "H": H, "lines": text.splitlines()})
        print()
with open(os.path.join(os.environ["WORK"], "plans.json"), "w") as f:
    json.dump({"gpu": gpu, "plans": rows}, f, indent=1)
EOF
}

# The headline shapes, one bench/run.py call per shape so that each one's
# results are on disk (and their JSON in OUT) before the next starts.
bench_shapes() {
  local providers=$1
  shift
  local rc=0 s
  for s in "$@"; do
    if $PY bench/run.py --providers "$providers" --shapes "$s" ${BENCH_ARGS:-} \
      --json "$WORK/bench_$s.json" --md "$WORK/bench_$s.md"; then
      keep "$WORK/bench_$s.json"
    else
      rc=1
    fi
  done
  return $rc
}

# Forced paths of both GPU backends on the headline shapes (CHARRNN_FAST_PATH),
# to set the planners' thresholds from measurements (in the archive).
path_sweep() {
  local rc=0 p
  for p in cuda:persistent cuda:stepwise triton:small triton:persistent triton:stepwise; do
    echo "=== CHARRNN_FAST_PATH=$p"
    CHARRNN_FAST_PATH=$p $PY bench/run.py --providers "${p%%:*}" --shapes char-rnn,blog \
      --modes fwd,fwdbwd --dtypes fp32,bf16 --json "$WORK/sweep_${p/:/_}.json" \
      --md "$WORK/sweep_${p/:/_}.md" || rc=1
  done
  return $rc
}
export -f env_report plans_report bench_shapes path_sweep # timeout runs commands: via bash -c

BUILD=(env MAX_JOBS=16 CHARRNN_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$ARCH}"
  "$PY" setup.py build_ext --inplace)
# One small case per sanitizer (bench/sanitize_case.py --one): with torch
# loaded, the tools need most of their cap to start. Without the caching
# allocator every tensor is its own allocation, so memcheck sees accesses past
# the end of a tensor; racecheck only concerns the persistent kernels' shared
# memory.
MEMCHECK=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --leak-check no
  --error-exitcode 1 "$PY" bench/sanitize_case.py --one)
RACECHECK=("$SANITIZER" --tool racecheck --racecheck-report analysis --error-exitcode 1
  "$PY" bench/sanitize_case.py --one --paths persistent)
# shellcheck disable=SC2046  # per_test prints words or none
case $MODE in
  first)
    step env 15 0 bash -c env_report
    step build 115 0 "${BUILD[@]}"
    step plans 15 0 bash -c plans_report
    step smoke 30 1 "$PY" bench/sanitize_case.py
    step cuda_tests 75 1 "$PY" -m pytest -v -rfEs -p no:cacheprovider $(per_test 40) \
      tests/lstm/test_cuda.py tests/lstm/test_planners.py \
      tests/lstm/test_generate.py::test_cuda_graph_chunks_give_the_eager_loops_tokens_and_state \
      tests/lstm/test_generate.py::test_cuda_uses_the_python_loop_with_the_same_tokens \
      tests/lstm/test_generate_rnn.py::test_cuda_graph_chunks_give_the_eager_loops_tokens_and_state
    step bench_headline 55 1 env BENCH_ARGS="--modes fwd,fwdbwd --dtypes fp32,bf16" \
      bash -c 'bench_shapes cudnn,cuda char-rnn blog'
    # Last: a barrier that hangs can only eat its own cap, which is what the
    # steps above left of the budget (about 50 s when they all ran to their caps).
    step triton_tests "$BUDGET" 1 "$PY" -m pytest -v -rfEs -p no:cacheprovider $(per_test 30) \
      -m triton tests/lstm/test_triton.py
    ;;
  full)
    step build 120 0 "${BUILD[@]}"
    step memcheck 45 1 "${MEMCHECK[@]}"
    step racecheck 45 1 "${RACECHECK[@]}"
    step bench_full 110 1 bash -c 'bench_shapes cudnn,cuda,triton char-rnn blog fastrnns large batch1'
    step path_sweep 60 1 bash -c path_sweep
    step micro 30 1 "$PY" -m pytest -q -p no:cacheprovider tests/bench/test_bench_micro.py \
      --benchmark-only --benchmark-json="$WORK/micro.json"
    ;;
esac
((TIMEOUT_OK)) || echo "note: pytest-timeout is not installed: no per-test timeout" | tee -a "$SUMMARY"
echo "total $(($(date +%s) - START))s" | tee -a "$SUMMARY"
pack
rm -rf "$WORK"
exit $FAILED
