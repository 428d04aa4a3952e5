"""LSTMRecurrence: the one autograd.Function over the recurrence, for every backend.

The backend (reference, cpu, cuda, triton) is chosen by the caller and passed
in; this file knows the op contract and nothing of modules or kernels.
Legend: T steps, B batch, H hidden units.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast.backends import Backend, reference


class LSTMRecurrence(torch.autograd.Function):
    """(gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H]) -> (y[T,B,H], hT[B,H], cT[B,H]).

    gx already holds the input projection and both biases. Backward returns
    the gradients of gx, w_hh, h0 and c0; it works in eval mode too (unlike
    cuDNN), since the need for saved activations is decided by `save`.

    Double backward (`create_graph=True`) works on every backend: the plain
    backward runs the backend's fused kernel; a backward that must itself be
    differentiable recomputes the recurrence from the saved inputs in plain
    PyTorch ops (the reference backend's forward) and lets autograd
    differentiate that (docs/DESIGN.md, "Numerics").
    """

    @staticmethod
    def forward(
        ctx, gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, backend: Backend, save: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, c_all, gates = backend.fwd(gx, w_hh, h0, c0, save)
        ctx.backend = backend
        if save:
            # gx and c0 serve a double backward only; they are the caller's
            # tensors (kept alive, not copied).
            ctx.save_for_backward(w_hh, y, c_all, gates, h0, gx, c0)
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
    w_hh, h0, gx, c0 = (ctx.saved_tensors[i] for i in (0, 4, 5, 6))
    wanted = [i for i, need in enumerate(ctx.needs_input_grad[:4]) if need]
    # Differentiate with respect to aliases of the inputs, not the inputs: h0
    # may itself depend on w_hh (a packed sequence's earlier segment), and the
    # gradient wanted here is the partial one, through this call alone. The
    # aliases keep the graph to the inputs for the next differentiation.
    inputs = tuple(t.view_as(t) for t in (gx, w_hh, h0, c0))
    # Whatever the backend, the recomputation is the reference's forward: plain
    # PyTorch ops, so the returned gradients carry a graph of their own.
    with torch.enable_grad():
        y, c_all, _ = reference.lstm_fwd(*inputs, False)
    grads = torch.autograd.grad(
        (y, y[-1], c_all[-1].to(gx.dtype)),
        [inputs[i] for i in wanted],
        (dy, dhT, dcT),
        create_graph=True,
        allow_unused=True,
    )
    out: list[Tensor | None] = [None] * 4
    for i, g in zip(wanted, grads):
        out[i] = g if g is not None else torch.zeros_like(inputs[i])
    return out
