#!/usr/bin/env python
"""Small calls of every CUDA path, for compute-sanitizer.

    compute-sanitizer --tool memcheck  python bench/sanitize_case.py
    compute-sanitizer --tool racecheck python bench/sanitize_case.py

Each case forces a path (CHARRNN_FAST_PATH=cuda:<path>, read at every call), runs
lstm_fwd + lstm_bwd once on a tiny problem chosen to exercise batch padding,
several blocks and both exchange-buffer parities, and compares with the
reference backend loosely: this script hunts memory errors and shared-memory
races; tests/test_cuda.py checks accuracy. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from charrnn_fast import _ops
from charrnn_fast.backends import reference

# (T, B, H, dtype): B not a multiple of 16; H = 48 gives 12 forward blocks of 4 units.
CASES = [
    (3, 5, 64, torch.bfloat16),
    (2, 17, 32, torch.float32),
    (2, 3, 48, torch.float16),
]
TOL = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def run_case(T: int, B: int, H: int, dtype: torch.dtype, path: str) -> bool:
    os.environ["CHARRNN_FAST_PATH"] = f"cuda:{path}"
    g = torch.Generator(device="cuda").manual_seed(T + B + H)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g, device="cuda").to(dtype)

    gx, w, h0, c0 = r(T, B, 4 * H), r(4 * H, H) / H**0.5, r(B, H), r(B, H)
    dy, dhT, dcT = r(T, B, H), r(B, H), r(B, H)
    ops = torch.ops.charrnn_fast
    got = ops.lstm_fwd(gx, w, h0, c0, True)
    got_b = ops.lstm_bwd(dy, dhT, dcT, w, *got, h0)
    want = reference.lstm_fwd(gx, w, h0, c0, True)
    want_b = reference.lstm_bwd(dy, dhT, dcT, w, *want, h0)
    torch.cuda.synchronize()
    worst = 0.0
    for a, b in zip((*got, *got_b), (*want, *want_b)):
        worst = max(worst, (a.double() - b.double()).abs().max().item())
    ok = worst <= TOL[dtype]
    print(f"{path:10s} {dtype} T{T} B{B} H{H}: max diff {worst:.2e} {'ok' if ok else 'MISMATCH'}")
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    if _ops.load_error() is not None or not _ops.with_cuda:
        print(f"charrnn_fast._C has no CUDA kernels: {_ops.load_error()}")
        return 1
    ok = True
    for T, B, H, dtype in CASES:
        for path in ("persistent", "stepwise"):
            ok &= run_case(T, B, H, dtype, path)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
