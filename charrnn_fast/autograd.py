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

    Double backward (`create_graph=True`) is served by backends whose forward
    autograd can differentiate (`Backend.double_backward`, the reference); the
    fused backends refuse it with an error that says so, never a wrong result.
    """

    @staticmethod
    def forward(
        ctx, gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, backend: Backend, save: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, c_all, gates = backend.fwd(gx, w_hh, h0, c0, save)
        ctx.backend = backend
        if save:
            # gx and c0 are kept only where a double backward can use them: for
            # the fused backends they would cost a [T,B,4H] buffer for nothing.
            extra = (gx, c0) if backend.double_backward else ()
            ctx.save_for_backward(w_hh, y, c_all, gates, h0, *extra)
        # Fresh tensors, not views of y / c_all: a custom Function must not
        # return views of its own outputs or of saved intermediates.
        return y, y[-1].clone(), c_all[-1].to(gx.dtype, copy=True)

    @staticmethod
    def backward(ctx, dy: Tensor, dhT: Tensor, dcT: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
            return (*_differentiable_backward(ctx, dy, dhT, dcT), None, None)
        w_hh, y, c_all, gates, h0 = ctx.saved_tensors[:5]
        dgx, dw_hh, dh0, dc0 = ctx.backend.bwd(
            dy.contiguous(), dhT.contiguous(), dcT.contiguous(), w_hh, y, c_all, gates, h0
        )
        return dgx, dw_hh, dh0, dc0, None, None


def _differentiable_backward(ctx, dy: Tensor, dhT: Tensor, dcT: Tensor) -> list[Tensor | None]:
    """(dgx, dw_hh, dh0, dc0) as a graph autograd can differentiate again: the
    forward recomputed in autograd-visible PyTorch ops, differentiated by autograd."""
    name = ctx.backend.name
    if not ctx.backend.double_backward:
        raise RuntimeError(
            f"charrnn_fast.LSTM: double backward (create_graph=True, gradgradcheck, "
            f"gradient penalties) is not supported by backend {name!r}, whose backward is a "
            "fused kernel. For higher-order gradients use backend='reference' (plain "
            "PyTorch, slower) or torch.nn.LSTM; first-order gradients need no create_graph."
        )
    gx, c0 = ctx.saved_tensors[5:]
    w_hh, h0 = ctx.saved_tensors[0], ctx.saved_tensors[4]
    inputs = (gx, w_hh, h0, c0)
    wanted = [i for i, need in enumerate(ctx.needs_input_grad[:4]) if need]
    y, c_all, _ = ctx.backend.fwd(gx, w_hh, h0, c0, False)
    grads = torch.autograd.grad(
        (y, y[-1], c_all[-1].to(gx.dtype)),
        [inputs[i] for i in wanted],
        (dy, dhT, dcT),
        create_graph=True,
        allow_unused=True,
    )
    out: list[Tensor | None] = [None] * 4
    for i, g in zip(wanted, grads):
        out[i] = g
    return out
