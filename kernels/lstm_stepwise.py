"""Any-size LSTM recurrence: the split-H kernels of lstm_persistent.py launched
once per step (docs/DESIGN.md, "Backends").

The stepwise path of the Triton backend (kernels/plan.py picks it when no
persistent grid fits, or when forced). The kernels are lstm_persistent.py's
_fwd_kernel and _bwd_kernel with PERSISTENT=False: each launch runs one step
(the backward two launches per step: the pointwise half writes dgx[t], the dot
half reads the whole dgx[t] row back), and the boundary between launches is
the barrier, so the grid may have any size and nothing has to stay resident.
The carries (c forward, dh and dc backward) go through global memory between
launches.

Legend: T steps, B batch, H hidden units; BLOCK_B rows and BLOCK_J hidden units
per program; BLOCK_K contraction chunk.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from charrnn_fast.kernels.lstm_common import forward_outputs
from charrnn_fast.kernels.lstm_persistent import INTERPRET, _bwd_kernel, _fwd_kernel


def forward(
    gx: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    training: bool,
    *,
    block_b: int,
    block_j: int,
    block_k: int,
    num_warps: int,
    prec: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H] fp32,
    gates[T,B,4H] (empty when not training). T launches."""
    T, B, G = gx.shape
    H = G // 4
    y, c_all, gates = forward_outputs(gx, c0, training)
    grid = (triton.cdiv(H, block_j), triton.cdiv(B, block_b))
    unused = torch.zeros(1, dtype=torch.int32, device=gx.device)  # no barrier counter
    for t in range(T if B > 0 else 0):
        _fwd_kernel[grid](
            gx, w_hh, h0 if t == 0 else y[t - 1], c_all, y,
            gates if training else y,  # never written when not training
            unused, t, 1, B, H,
            BLOCK_B=block_b, BLOCK_J=block_j, BLOCK_K=block_k, W_RESIDENT=False,
            PERSISTENT=False, STORE_GATES=training, PREC=prec, INTERPRET=INTERPRET,
            num_warps=num_warps,
        )  # fmt: skip
    return y, c_all, gates


def backward(
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
    w_hh: Tensor,
    c_all: Tensor,
    gates: Tensor,
    *,
    block_b: int,
    block_j: int,
    block_k: int,
    num_warps: int,
    prec: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """dy[T,B,H], dhT[B,H], dcT[B,H], w_hh[4H,H], c_all[T+1,B,H], gates[T,B,4H]
    -> dgx[T,B,4H], dh0[B,H], dc0[B,H] (all in the input dtype). 2T launches."""
    T, B, H = dy.shape
    dgx = dy.new_empty((T, B, 4 * H))
    dh = dhT.to(torch.float32, copy=True)  # [B, H] carries, updated in place
    dc = dcT.to(torch.float32, copy=True)
    grid = (triton.cdiv(H, block_j), triton.cdiv(B, block_b))
    unused = torch.zeros(1, dtype=torch.int32, device=dy.device)
    for t in range(T - 1, -1, -1) if B > 0 else ():
        for pointwise in (True, False):
            _bwd_kernel[grid](
                dy, w_hh, c_all, gates, dgx, dh, dc, unused, t, 1, B, H,
                BLOCK_B=block_b, BLOCK_J=block_j, BLOCK_K=block_k, W_RESIDENT=False,
                PERSISTENT=False, DO_POINTWISE=pointwise, DO_DOT=not pointwise, PREC=prec,
                INTERPRET=INTERPRET, num_warps=num_warps,
            )  # fmt: skip
    return dgx, dh.to(dy.dtype), dc.to(dy.dtype)
