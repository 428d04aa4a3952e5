"""@triton.jit helpers shared by the LSTM kernels: activations, the gate matmul,
the grid barrier of the persistent kernels.

Import this module (and the kernel modules) only after TRITON_INTERPRET has its
final value: @triton.jit decides at decoration time whether the kernels are
compiled or interpreted.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


def forward_outputs(gx: Tensor, c0: Tensor, training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The op contract's forward outputs for gx[T,B,4H], c0[B,H], allocated for
    every Triton path: y[T,B,H], c_all[T+1,B,H] fp32 with c_all[0] = c0, and
    gates[T,B,4H] (shape [0] when not training)."""
    T, B, G = gx.shape
    H = G // 4
    y = gx.new_empty((T, B, H))
    c_all = gx.new_empty((T + 1, B, H), dtype=torch.float32)
    c_all[0].copy_(c0)
    gates = gx.new_empty((T, B, G)) if training else gx.new_empty((0,))
    return y, c_all, gates


def backward_buffers(dy: Tensor, dhT: Tensor, dcT: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For dy[T,B,H], dhT[B,H], dcT[B,H]: dgx[T,B,4H] in the input dtype (to be
    written) and the fp32 carries dh, dc [B,H] = dhT, dcT, which the split-H
    backward kernels update in place (lstm_persistent, lstm_stepwise)."""
    T, B, H = dy.shape
    dgx = dy.new_empty((T, B, 4 * H))
    return dgx, dhT.to(torch.float32, copy=True), dcT.to(torch.float32, copy=True)


@triton.jit
def tanh(x):
    # tl.math.tanh and libdevice do not exist under TRITON_INTERPRET=1. This
    # identity is exact algebra; its absolute error is about one ulp of 1,
    # well inside what a fp32 cell state tolerates. It also avoids inf/inf for
    # large |x| (sigmoid saturates cleanly to 0 or 1).
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def to_dtype(x, dt: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 x rounded to dtype dt to nearest even, as the GPU's cvt.rn does."""
    if INTERPRET and dt == tl.bfloat16:
        # The interpreter truncates fp32 -> bf16 (measured with triton 3.8, with
        # or without fp_downcast_rounding="rtne"), which biases every stored h
        # and gradient. Round on the bits first; the truncation is then exact.
        b = x.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        out = b.to(tl.float32, bitcast=True).to(dt)
    else:
        out = x.to(dt)
    return out


@triton.jit
def mm(a, b, acc, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    """acc[M,N] (fp32) + a[M,K] @ b[K,N]; a and b in the input dtype."""
    if INTERPRET:
        # The interpreter multiplies bfloat16 operands as raw integers (wrong
        # results, measured with triton 3.8). Products of bf16/fp16 values are
        # exact in fp32, so doing the product in fp32 is what the tensor cores
        # compute anyway: fp32 accumulation of exact products.
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        # PREC only matters for fp32 operands: "ieee" (exact fp32 FMA) or
        # "tf32" (tensor cores, 10-bit mantissa), as torch's matmul precision.
        out = tl.dot(a, b, acc, input_precision=PREC)
    return out


@triton.jit
def load_acquire(ptr, INTERPRET: tl.constexpr):
    """*ptr (int32) read with acquire semantics at GPU scope: a plain load
    (ld.acquire.gpu), not a read-modify-write, so programs polling a counter do
    not queue at L2's atomic unit behind the ones arriving. Every thread
    issues it (inline assembly runs per thread), which also gives every thread
    its own acquire. The interpreter cannot run inline assembly: there an
    acquire atomic add of 0 reads the same value."""
    if INTERPRET:
        v = tl.atomic_add(ptr, 0, sem="acquire", scope="gpu")
    else:
        v = tl.inline_asm_elementwise(
            "ld.acquire.gpu.global.b32 $0, [$1];",
            "=r,l",
            [ptr],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
    return v


@triton.jit
def grid_barrier(counter_ptr, target, INTERPRET: tl.constexpr):
    """Arrive at, and wait on, a monotonically increasing arrival counter.

    counter_ptr: int32 scalar, zeroed before the launch; every program that
    shares it adds 1 per step, so after step s (0-based) of n programs the
    barrier is passed when the counter reaches n * (s + 1). No reset, hence no
    race between a fast program's next arrival and a slow one's last read.
    Counters of different batch tiles lie 128 bytes apart (COUNTER_STRIDE in
    lstm_persistent.py), so tiles polling their own never share an L2 sector.

    Memory ordering: the CTA barrier first makes every warp's stores of this
    step (the h_t / dgates slice) happen-before the arrival of this program;
    the arrival is an acq_rel atomic at GPU scope, so those stores are
    released to, and the other programs' stores acquired by, whoever reads
    the counter with acquire semantics afterwards: the polling is an acquire
    load (load_acquire). Readers still load the exchanged values with volatile
    loads (L1 bypassed) as a second line of defence against stale cached lines.

    Liveness: the spin waits for programs that must be running at the same
    time. The launch guarantees it (lstm_persistent.py: a cooperative launch,
    after an occupancy check), not this function.
    """
    tl.debug_barrier()
    seen = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") + 1
    while seen < target:
        seen = load_acquire(counter_ptr, INTERPRET)
    tl.debug_barrier()
