"""Each fp32 CPU kernel of the recurrence against a oneDNN GEMM of equal flops.

    python bench/cpu_kernels.py --threads 1 --shape 50,50,128

The machine's speed drifts by tens of percent from minute to minute (a shared
VM), so absolute times of one kernel are not comparable across runs. Here
every call of a kernel is timed right after a oneDNN GEMM with the same flop
count (x[T*B, H] W[4H, H]^T, weights packed once), and the row reports the
median of their ratios: 1.0 means "as fast as a plain GEMM", whatever the
machine does. lstm_fwd counts the recurrence GEMM's flops (its pointwise
update is overhead on top), lstm_bwd twice that (dh_{t-1} and dW_hh), mm_tn
the weight gradient's.
"""

from __future__ import annotations

import argparse
import time

import torch

import charrnn_fast  # noqa: F401  (registers torch.ops.charrnn_fast)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="50,50,128", help="T,B,H")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    T, B, H = (int(v) for v in args.shape.split(","))
    op, g = torch.ops.charrnn_fast, torch.Generator().manual_seed(0)
    gx = torch.randn(T, B, 4 * H, generator=g)
    w = torch.randn(4 * H, H, generator=g) * 0.1
    h0 = c0 = torch.zeros(B, H)
    y, c_all, gates = op.lstm_fwd(gx, w, h0, c0, True)
    dy = torch.randn(T, B, H, generator=g)
    dg, hh = torch.randn(T * B, 4 * H, generator=g), torch.randn(T * B, H, generator=g)
    a = torch.randn(T * B, H, generator=g)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, T * B)

    def gemm() -> object:
        return torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")

    flops = 2 * T * B * 4 * H * H
    cases = {
        "lstm_fwd": (lambda: op.lstm_fwd(gx, w, h0, c0, True), 1),
        "lstm_bwd": (lambda: op.lstm_bwd(dy, h0, c0, w, y, c_all, gates, h0), 2),
        "mm_tn": (lambda: op.mm_tn(dg, hh), 1),
    }
    print(f"T={T} B={B} H={H}, {args.threads} thread(s), {args.rounds} rounds")
    for name, (fn, mult) in cases.items():
        for _ in range(3):
            fn(), gemm()
        ratios, base = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            gemm()
            t1 = time.perf_counter()
            fn()
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0) / mult)
            base.append(t1 - t0)
        ratios.sort(), base.sort()
        n = len(ratios)
        print(
            f"{name:9s} time / equal-flop oneDNN GEMM: {ratios[n // 2]:.3f} "
            f"(p20 {ratios[n // 5]:.3f}, p80 {ratios[4 * n // 5]:.3f}); "
            f"the GEMM ran at {flops / base[n // 2] / 1e9:.0f} GFLOP/s"
        )


if __name__ == "__main__":
    main()
