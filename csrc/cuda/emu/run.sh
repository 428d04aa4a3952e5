#!/usr/bin/env bash
# Logic check of the persistent kernels on the CPU (no GPU needed): compiles
# the real persistent_*.cu with g++ against the emulation in this folder, with
# AddressSanitizer, and compares every output with a float64 loop.
# Usage: bash csrc/cuda/emu/run.sh [build-dir]   (about a minute on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-/tmp/charrnn_emu}"
cuda="${CUDA_HOME:-/usr/local/cuda}"
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -DCHARRNN_EMULATE -fsanitize=address -fno-omit-frame-pointer
       -Wno-unknown-pragmas -I"$here/include" -I"$here/.." -I"$cuda/include")
objs=()
for src in "$here/../persistent_fwd.cu" "$here/../persistent_bwd.cu" "$here/../plan.cpp" \
           "$here/emulate.cpp" "$here/emulate_test.cpp"; do
  obj="$out/$(basename "$src").o"
  g++ "${flags[@]}" -x c++ -c "$src" -o "$obj" &
  objs+=("$obj")
done
wait
g++ -fsanitize=address -pthread "${objs[@]}" -o "$out/emulate_test"
ASAN_OPTIONS=detect_leaks=0 "$out/emulate_test"
