#!/usr/bin/env bash
# Logic check of the persistent kernels on the CPU (no GPU needed): compiles
# the real persistent_*.cu with g++ against the emulation in this folder and
# compares every output with a float64 loop.
# Usage: bash csrc/cuda/emu/run.sh [MODE] [build-dir] [-- WORD...]
#   (no MODE)      AddressSanitizer, every case (about 40 s on 2 cores)
#   --tsan         ThreadSanitizer, the cases with several batch slices (the
#                  grid barrier between blocks) and the wavefront's: must be
#                  race-free
#   --tsan-mutant  ThreadSanitizer on a mutant whose grid barrier is relaxed
#                  instead of release/acquire: succeeds only when the run fails
#                  with a data-race report (proof that --tsan can fail)
#   -- WORD...     only the cases whose label contains one of the words
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cuda="${CUDA_HOME:-/usr/local/cuda}"
mode=asan
case "${1:-}" in
  --tsan) mode=tsan; shift ;;
  --tsan-mutant) mode=mutant; shift ;;
  --*) [ "$1" = "--" ] || { echo "run.sh: unknown mode $1" >&2; exit 2; } ;;
esac
out=/tmp/charrnn_emu_$mode
if [ $# -gt 0 ] && [ "$1" != "--" ]; then out="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
words=("$@")

flags=(-std=c++20 -O1 -g -DCHARRNN_EMULATE -fno-omit-frame-pointer -Wno-unknown-pragmas -Wno-tsan
       -I"$here/include" -I"$here/.." -I"$cuda/include")
if [ "$mode" = asan ]; then
  san=(-fsanitize=address)
else
  san=(-fsanitize=thread)
  # Several batch slices: blocks that meet at the barrier, and others that must
  # not; and the wavefront, whose layers exchange h through the barrier.
  [ ${#words[@]} -gt 0 ] || words=(slices wave)
fi
[ "$mode" = mutant ] && flags+=(-DCHARRNN_EMU_RELAXED_BARRIER)
mkdir -p "$out"
objs=()
for src in "$here/../persistent_fwd.cu" "$here/../persistent_bwd.cu" "$here/../plan.cpp" \
           "$here/../wavefront_fwd.cu" "$here/../wavefront_bwd.cu" "$here/../wave_plan.cpp" \
           "$here/emulate.cpp" "$here/emulate_test.cpp" "$here/wave_test.cpp"; do
  obj="$out/$(basename "$src").o"
  g++ "${flags[@]}" "${san[@]}" -x c++ -c "$src" -o "$obj" &
  objs+=("$obj")
done
for job in $(jobs -p); do wait "$job"; done  # a failed compile fails the script
g++ "${san[@]}" -pthread "${objs[@]}" -o "$out/emulate_test"

case "$mode" in
  asan) ASAN_OPTIONS=detect_leaks=0 "$out/emulate_test" "${words[@]}" ;;
  tsan) TSAN_OPTIONS=halt_on_error=1 "$out/emulate_test" "${words[@]}" ;;
  mutant)
    log="$out/mutant.log"
    if TSAN_OPTIONS=halt_on_error=1 "$out/emulate_test" "${words[@]}" >"$log" 2>&1; then
      echo "run.sh --tsan-mutant: the relaxed-barrier mutant passed: ThreadSanitizer missed it" >&2
      exit 1
    fi
    if ! grep -q "WARNING: ThreadSanitizer: data race" "$log"; then
      echo "run.sh --tsan-mutant: the mutant failed without a data-race report:" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    grep -m1 -A4 "WARNING: ThreadSanitizer: data race" "$log"
    echo "run.sh --tsan-mutant: ok, ThreadSanitizer reports the relaxed barrier's data race"
    ;;
esac
