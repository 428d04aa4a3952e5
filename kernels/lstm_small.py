"""Small-H LSTM recurrence: one program per batch tile, the whole time loop inside
(the small path of the triton backend; docs/DESIGN.md, "Backends", "Numerics").

Algorithm (forward), per program and step t:
    pre_q = gx[t, rows, q*H:(q+1)*H] + h_{t-1} @ W_q^T     for the gates q = i, f, g, o
    c_t = sigmoid(pre_f) c_{t-1} + sigmoid(pre_i) tanh(pre_g)
    h_t = sigmoid(pre_o) tanh(c_t), rounded to the input dtype (stored in y[t]
          and fed back as the next step's matmul operand, as the op contract says)
Backward runs the same loop in reverse:
    dh_t = dy[t] + dh;  dc_t = dc + dh_t o (1 - tanh(c_t)^2)
    dgx[t] = (dc_t g i(1-i), dc_t c_{t-1} f(1-f), dc_t i (1-g^2), dh_t tanh(c_t) o(1-o))
    dc <- dc_t f;  dh <- sum_q dgx[t, :, q] @ W_q   (dgx rounded to the input dtype first,
          exactly as the persistent kernel reads it back from memory)
dW_hh is one GEMM after the loop (in the backend wrapper), not part of this file.

Parallelisation: batch rows are independent, so each program owns BLOCK_B rows,
holds all of W_hh on chip for the whole sequence (four [H, H] tiles, loaded once
before the loop; the compiler keeps loop-invariant dot operands in registers or
shared memory), keeps h and c in registers, and never synchronises with another
program. The cost: every program holds the whole W_hh, so this path is limited to
H where 4 H^2 elements fit on one SM (checked by kernels/plan.py).

Numerics: fp32 accumulation (tl.dot with an fp32 accumulator), fp32 cell state,
fp32 pointwise math; dtype conversions only at loads and stores.

Legend: T steps, B batch, H hidden units, G = 4H; BLOCK_B rows per program,
BLOCK_H = next power of two >= max(H, 16) (tl.dot needs every dim >= 16).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from charrnn_fast.kernels import plan
from charrnn_fast.kernels.lstm_common import forward_outputs, mm, tanh, to_dtype

# Fixed at import, like @triton.jit itself (see lstm_common.py).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


# Not specialised on T: one compiled kernel serves every sequence length.
@triton.jit(do_not_specialize=["T"])
def _fwd_kernel(
    gx_ptr,  # [T, B, 4H] input dtype
    w_ptr,  # [4H, H] input dtype
    h0_ptr,  # [B, H] input dtype
    c_ptr,  # [T+1, B, H] fp32; c_ptr[0] = c0 on entry, c_ptr[t+1] = c_t on exit
    y_ptr,  # [T, B, H] input dtype
    gates_ptr,  # [T, B, 4H] input dtype, activated i, f, g, o (written if STORE_GATES)
    T,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    STORE_GATES: tl.constexpr,
    PREC: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    m_bh = (rb < B)[:, None] & (rh < H)[None, :]
    m_hh = (rh < H)[:, None] & (rh < H)[None, :]
    # W_q^T as [k, j] tiles: element (k, j) = w[q*H + j, k]. Masked lanes are 0,
    # so padded hidden units never leak into real ones.
    wt = rh[None, :] * H + rh[:, None]
    w_i = tl.load(w_ptr + wt, mask=m_hh, other=0.0)
    w_f = tl.load(w_ptr + H * H + wt, mask=m_hh, other=0.0)
    w_g = tl.load(w_ptr + 2 * H * H + wt, mask=m_hh, other=0.0)
    w_o = tl.load(w_ptr + 3 * H * H + wt, mask=m_hh, other=0.0)

    o_bh = rb[:, None] * H + rh[None, :]  # into a [B, H] plane
    o_bg = rb[:, None] * (4 * H) + rh[None, :]  # into a [B, 4H] plane, gate i
    BH = B * H
    h = tl.load(h0_ptr + o_bh, mask=m_bh, other=0.0)
    c = tl.load(c_ptr + o_bh, mask=m_bh, other=0.0).to(tl.float32)
    for s in range(T):
        # int64 plane offsets: T * B * 4H may pass 2**31 even when one plane does not.
        t = tl.cast(s, tl.int64)
        gx_t = gx_ptr + t * (4 * BH) + o_bg
        a_i = tl.load(gx_t, mask=m_bh, other=0.0).to(tl.float32)
        a_f = tl.load(gx_t + H, mask=m_bh, other=0.0).to(tl.float32)
        a_g = tl.load(gx_t + 2 * H, mask=m_bh, other=0.0).to(tl.float32)
        a_o = tl.load(gx_t + 3 * H, mask=m_bh, other=0.0).to(tl.float32)
        i = tl.sigmoid(mm(h, w_i, a_i, PREC, INTERPRET))
        f = tl.sigmoid(mm(h, w_f, a_f, PREC, INTERPRET))
        g = tanh(mm(h, w_g, a_g, PREC, INTERPRET))
        o = tl.sigmoid(mm(h, w_o, a_o, PREC, INTERPRET))
        c = f * c + i * g
        h = to_dtype(o * tanh(c), y_ptr.dtype.element_ty, INTERPRET)
        tl.store(y_ptr + t * BH + o_bh, h, mask=m_bh)
        tl.store(c_ptr + (t + 1) * BH + o_bh, c, mask=m_bh)
        if STORE_GATES:
            gt = gates_ptr + t * (4 * BH) + o_bg
            dt = gates_ptr.dtype.element_ty
            tl.store(gt, to_dtype(i, dt, INTERPRET), mask=m_bh)
            tl.store(gt + H, to_dtype(f, dt, INTERPRET), mask=m_bh)
            tl.store(gt + 2 * H, to_dtype(g, dt, INTERPRET), mask=m_bh)
            tl.store(gt + 3 * H, to_dtype(o, dt, INTERPRET), mask=m_bh)


@triton.jit(do_not_specialize=["T"])
def _bwd_kernel(
    dy_ptr,  # [T, B, H] input dtype
    w_ptr,  # [4H, H] input dtype
    c_ptr,  # [T+1, B, H] fp32 (c_all of the forward)
    gates_ptr,  # [T, B, 4H] input dtype (activated i, f, g, o)
    dgx_ptr,  # [T, B, 4H] input dtype, out
    dhT_ptr,  # [B, H] input dtype
    dcT_ptr,  # [B, H] input dtype
    dh0_ptr,  # [B, H] input dtype, out
    dc0_ptr,  # [B, H] input dtype, out
    T,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PREC: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    m_bh = (rb < B)[:, None] & (rh < H)[None, :]
    m_hh = (rh < H)[:, None] & (rh < H)[None, :]
    # W_q as [u, k] tiles (u: the gate's hidden unit, contracted), element w[q*H + u, k].
    wq = rh[:, None] * H + rh[None, :]
    w_i = tl.load(w_ptr + wq, mask=m_hh, other=0.0)
    w_f = tl.load(w_ptr + H * H + wq, mask=m_hh, other=0.0)
    w_g = tl.load(w_ptr + 2 * H * H + wq, mask=m_hh, other=0.0)
    w_o = tl.load(w_ptr + 3 * H * H + wq, mask=m_hh, other=0.0)

    o_bh = rb[:, None] * H + rh[None, :]
    o_bg = rb[:, None] * (4 * H) + rh[None, :]
    BH = B * H
    dt = dgx_ptr.dtype.element_ty
    dh = tl.load(dhT_ptr + o_bh, mask=m_bh, other=0.0).to(tl.float32)
    dc = tl.load(dcT_ptr + o_bh, mask=m_bh, other=0.0).to(tl.float32)
    for s in range(T):
        t = tl.cast(T - 1 - s, tl.int64)
        gt = gates_ptr + t * (4 * BH) + o_bg
        i = tl.load(gt, mask=m_bh, other=0.0).to(tl.float32)
        f = tl.load(gt + H, mask=m_bh, other=0.0).to(tl.float32)
        g = tl.load(gt + 2 * H, mask=m_bh, other=0.0).to(tl.float32)
        o = tl.load(gt + 3 * H, mask=m_bh, other=0.0).to(tl.float32)
        c_prev = tl.load(c_ptr + t * BH + o_bh, mask=m_bh, other=0.0)
        tc = tanh(tl.load(c_ptr + (t + 1) * BH + o_bh, mask=m_bh, other=0.0))
        dh_t = tl.load(dy_ptr + t * BH + o_bh, mask=m_bh, other=0.0).to(tl.float32) + dh
        dc_t = dc + dh_t * o * (1.0 - tc * tc)
        d_i = to_dtype(dc_t * g * i * (1.0 - i), dt, INTERPRET)
        d_f = to_dtype(dc_t * c_prev * f * (1.0 - f), dt, INTERPRET)
        d_g = to_dtype(dc_t * i * (1.0 - g * g), dt, INTERPRET)
        d_o = to_dtype(dh_t * tc * o * (1.0 - o), dt, INTERPRET)
        dg_t = dgx_ptr + t * (4 * BH) + o_bg
        tl.store(dg_t, d_i, mask=m_bh)
        tl.store(dg_t + H, d_f, mask=m_bh)
        tl.store(dg_t + 2 * H, d_g, mask=m_bh)
        tl.store(dg_t + 3 * H, d_o, mask=m_bh)
        dc = dc_t * f
        dh = mm(d_i, w_i, tl.zeros([BLOCK_B, BLOCK_H], tl.float32), PREC, INTERPRET)
        dh = mm(d_f, w_f, dh, PREC, INTERPRET)
        dh = mm(d_g, w_g, dh, PREC, INTERPRET)
        dh = mm(d_o, w_o, dh, PREC, INTERPRET)
    tl.store(dh0_ptr + o_bh, to_dtype(dh, dt, INTERPRET), mask=m_bh)
    tl.store(dc0_ptr + o_bh, to_dtype(dc, dt, INTERPRET), mask=m_bh)


def block_h(H: int) -> int:
    """The padded tile width for H hidden units (tl.dot needs >= 16)."""
    return max(16, triton.next_power_of_2(H))


def forward(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool, run: plan.Launch
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H] fp32, gates.

    gates is [T,B,4H] when training, else empty. Arguments must already be
    validated (contiguous, same dtype and device).
    """
    T, B, G = gx.shape
    H = G // 4
    y, c_all, gates = forward_outputs(gx, c0, training)
    if T * B == 0:
        return y, c_all, gates
    gates_out = gates if training else y  # never written when not training
    args = (gx, w_hh, h0, c_all, y, gates_out, T, B, H)
    _fwd_kernel[_grid(run, B)](*args, STORE_GATES=training, **_consts(run, H))
    return y, c_all, gates


def backward(
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
    w_hh: Tensor,
    c_all: Tensor,
    gates: Tensor,
    run: plan.Launch,
) -> tuple[Tensor, Tensor, Tensor]:
    """dy[T,B,H], dhT[B,H], dcT[B,H], w_hh[4H,H], c_all[T+1,B,H], gates[T,B,4H]
    -> dgx[T,B,4H], dh0[B,H], dc0[B,H] (all in the input dtype)."""
    T, B, H = dy.shape
    dgx = dy.new_empty((T, B, 4 * H))
    if T * B == 0:
        return dgx, dhT.clone(), dcT.clone()
    dh0 = torch.empty_like(dhT)
    dc0 = torch.empty_like(dcT)
    args = (dy, w_hh, c_all, gates, dgx, dhT, dcT, dh0, dc0, T, B, H)
    _bwd_kernel[_grid(run, B)](*args, **_consts(run, H))
    return dgx, dh0, dc0


def _grid(run: plan.Launch, B: int) -> tuple[int]:
    return (triton.cdiv(B, run.plan.block_b),)


def _consts(run: plan.Launch, H: int) -> dict:
    p = run.plan
    return dict(
        BLOCK_B=p.block_b,
        BLOCK_H=block_h(H),
        PREC=run.prec,
        INTERPRET=INTERPRET,
        num_warps=p.num_warps,
    )
