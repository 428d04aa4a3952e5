"""The reference backend: the op contract in plain PyTorch.

It is the gold standard of the tests and runs on any device and dtype. Same
numerics as the fused kernels: arithmetic and the cell state in the
accumulation type (fp32, fp64 for fp64 inputs), the hidden state rounded to the
input dtype once per step. Legend: T steps, B batch, H hidden units.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast.contract import acc_dtype, check_bwd, check_fwd


def lstm_fwd(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H], gates[T,B,4H]."""
    T, B, H = check_fwd(gx, w_hh, h0, c0)
    acc = acc_dtype(gx.dtype)
    w = w_hh.to(acc)
    h, c = h0.to(acc), c0.to(acc)
    # Lists and one stack, no writes into preallocated outputs: autograd can
    # differentiate this twice (LSTMRecurrence's double backward runs it).
    ys, cs, gs = [], [c], []
    for t in range(T):
        pre = gx[t].to(acc) + h @ w.t()
        i, f, g, o = pre.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        y_t = (o * c.tanh()).to(gx.dtype)
        h = y_t.to(acc)
        ys.append(y_t)
        cs.append(c)
        if training:
            gs.append(torch.cat((i, f, g, o), dim=1).to(gx.dtype))
    gates = torch.stack(gs) if training else gx.new_empty((0,))
    return torch.stack(ys), torch.stack(cs), gates


def lstm_bwd(
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
    w_hh: Tensor,
    y: Tensor,
    c_all: Tensor,
    gates: Tensor,
    h0: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """dy[T,B,H], dhT[B,H], dcT[B,H] -> dgx[T,B,4H], dw_hh[4H,H], dh0[B,H], dc0[B,H]."""
    T, B, H = check_bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0)
    acc = c_all.dtype
    w = w_hh.to(acc)
    dh = dhT.to(acc)
    dc = dcT.to(acc)
    # A list and one stack, no writes into a preallocated buffer: batched
    # gradients (torch.func.vmap, gradcheck's check_batched_grad) need this
    # function to be free of in-place updates.
    dgxs = []
    for t in range(T - 1, -1, -1):
        i, f, g, o = gates[t].to(acc).chunk(4, dim=1)
        tc = c_all[t + 1].tanh()
        dh_t = dy[t].to(acc) + dh
        dc_t = dc + dh_t * o * (1 - tc * tc)
        dg = torch.cat(
            (
                dc_t * g * i * (1 - i),
                dc_t * c_all[t] * f * (1 - f),
                dc_t * i * (1 - g * g),
                dh_t * tc * o * (1 - o),
            ),
            dim=1,
        )
        dgxs.append(dg)
        dc = dc_t * f
        dh = dg @ w
    dgx = torch.stack(dgxs[::-1]) if T > 0 else y.new_zeros((0, B, 4 * H), dtype=acc)
    # dW_hh is one GEMM over all steps; h_{-1} is h0.
    h_prev = torch.cat((h0.unsqueeze(0), y[:-1])).to(acc)
    dw = dgx.reshape(T * B, 4 * H).t() @ h_prev.reshape(T * B, H)
    dt = y.dtype
    return dgx.to(dt), dw.to(dt), dh.to(dt), dc.to(dt)


def projected(
    gx: Tensor, w_hh: Tensor, w_hr: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The projected recurrence in differentiable PyTorch ops (autograd's backward,
    double backward included). gx [T,B,4H], w_hh [4H,P], w_hr [P,H], h0 [B,P],
    c0 [B,H] -> y [T,B,P], hT [B,P], cT [B,H]. Numerics as the op contract: the
    cell state and arithmetic in acc(dtype), h rounded to the dtype each step."""
    acc = acc_dtype(gx.dtype)
    w, r = w_hh.to(acc), w_hr.to(acc)
    h, c = h0.to(acc), c0.to(acc)
    ys = []
    for t in range(gx.size(0)):
        i, f, g, o = (gx[t].to(acc) + h @ w.t()).chunk(4, dim=1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        y_t = ((o.sigmoid() * c.tanh()) @ r.t()).to(gx.dtype)
        h = y_t.to(acc)
        ys.append(y_t)
    return torch.stack(ys), ys[-1], c.to(gx.dtype)
