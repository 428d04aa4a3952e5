"""LSTMRecurrence: the one autograd.Function over the recurrence, for every backend.

The backend (reference, cpu, cuda, triton) is chosen by the caller and passed
in; this file knows the op contract and nothing of modules or kernels.
Legend: T steps, B batch, H hidden units.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast.backends import Backend


class LSTMRecurrence(torch.autograd.Function):
    """(gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H]) -> (y[T,B,H], hT[B,H], cT[B,H]).

    gx already holds the input projection and both biases. Backward returns
    the gradients of gx, w_hh, h0 and c0; it works in eval mode too (unlike
    cuDNN), since the need for saved activations is decided by `save`.
    """

    @staticmethod
    def forward(
        ctx, gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, backend: Backend, save: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, c_all, gates = backend.fwd(gx, w_hh, h0, c0, save)
        ctx.backend = backend
        if save:
            ctx.save_for_backward(w_hh, y, c_all, gates, h0)
        # Fresh tensors, not views of y / c_all: a custom Function must not
        # return views of its own outputs or of saved intermediates.
        return y, y[-1].clone(), c_all[-1].to(gx.dtype, copy=True)

    @staticmethod
    def backward(ctx, dy: Tensor, dhT: Tensor, dcT: Tensor):
        w_hh, y, c_all, gates, h0 = ctx.saved_tensors
        dgx, dw_hh, dh0, dc0 = ctx.backend.bwd(
            dy.contiguous(), dhT.contiguous(), dcT.contiguous(), w_hh, y, c_all, gates, h0
        )
        return dgx, dw_hh, dh0, dc0, None, None
