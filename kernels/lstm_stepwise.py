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
from torch import Tensor

from charrnn_fast.kernels import plan
from charrnn_fast.kernels.lstm_common import backward_buffers, forward_outputs
from charrnn_fast.kernels.lstm_persistent import INTERPRET, _bwd_kernel, _fwd_kernel, split_h


def forward(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool, run: plan.Launch
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H] fp32,
    gates[T,B,4H] (empty when not training). T launches."""
    T, B, G = gx.shape
    H = G // 4
    y, c_all, gates = forward_outputs(gx, c0, training)
    grid, consts = split_h(run, B, H, persistent=False)
    unused = torch.zeros(1, dtype=torch.int32, device=gx.device)  # no barrier counter
    gates_out = gates if training else y  # never written when not training
    for t in range(T if B > 0 else 0):
        h_prev = h0 if t == 0 else y[t - 1]
        args = (gx, w_hh, h_prev, c_all, y, gates_out, unused, t, 1, B, H)
        _fwd_kernel[grid](*args, STORE_GATES=training, INTERPRET=INTERPRET, **consts)
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
    -> dgx[T,B,4H], dh0[B,H], dc0[B,H] (all in the input dtype). 2T launches."""
    T, B, H = dy.shape
    dgx, dh, dc = backward_buffers(dy, dhT, dcT)  # dh, dc: carries, updated in place
    grid, consts = split_h(run, B, H, persistent=False)
    unused = torch.zeros(1, dtype=torch.int32, device=dy.device)
    for t in range(T - 1, -1, -1) if B > 0 else ():
        args = (dy, w_hh, c_all, gates, dgx, dh, dc, unused, t, 1, B, H)
        for pointwise in (True, False):
            halves = dict(DO_POINTWISE=pointwise, DO_DOT=not pointwise)
            _bwd_kernel[grid](*args, INTERPRET=INTERPRET, **halves, **consts)
    return dgx, dh.to(dy.dtype), dc.to(dy.dtype)
