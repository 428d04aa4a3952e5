#!/usr/bin/env python
"""Small calls of every CUDA path, for compute-sanitizer.

    python bench/sanitize_case.py                  # every case and path (a smoke test)
    compute-sanitizer --tool memcheck  python bench/sanitize_case.py --one
    compute-sanitizer --tool racecheck python bench/sanitize_case.py --one --paths persistent

--one runs the first case only: under a sanitizer, with torch loaded, one small
case is what fits a short time cap (bench/gpu_check.sh).

Each case forces a path (CHARRNN_FAST_PATH=cuda:<path>, read at every call), runs
lstm_fwd + lstm_bwd once on a tiny problem chosen to exercise batch padding,
several blocks and both exchange-buffer parities, and compares with the
reference backend loosely: this script hunts memory errors and shared-memory
races; tests/test_cuda.py checks accuracy. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
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


def run_case(T: int, B: int, H: int, dtype: torch.dtype, path: str, offset: bool = False) -> bool:
    """offset: every input one element into its storage (misaligned for the
    persistent kernels' vector loads: auto must take the stepwise path)."""
    os.environ["CHARRNN_FAST_PATH"] = f"cuda:{path}"
    g = torch.Generator(device="cuda").manual_seed(T + B + H)

    def r(*s: int) -> torch.Tensor:
        x = torch.randn(*s, generator=g, device="cuda").to(dtype)
        if not offset:
            return x
        buf = torch.empty(x.numel() + 1, device="cuda", dtype=dtype)
        return buf[1:].view(x.shape).copy_(x)

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
    label = path + (" offset" if offset else "")
    print(f"{label:17s} {dtype} T{T} B{B} H{H}: max diff {worst:.2e} {'ok' if ok else 'MISMATCH'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one", action="store_true", help="the first case only")
    ap.add_argument(
        "--paths",
        default="persistent,stepwise,auto",
        help="comma list of persistent, stepwise, auto (auto: misaligned inputs)",
    )
    args = ap.parse_args(argv)
    paths = args.paths.split(",")
    bad = [p for p in paths if p not in ("persistent", "stepwise", "auto")]
    if bad:
        ap.error(f"--paths takes persistent, stepwise, auto; got {bad}")
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    if _ops.load_error() is not None or not _ops.with_cuda:
        print(f"charrnn_fast._C has no CUDA kernels: {_ops.load_error()}")
        return 1
    ok = True
    for T, B, H, dtype in CASES[:1] if args.one else CASES:
        for path in paths:
            ok &= run_case(T, B, H, dtype, path, offset=path == "auto")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
