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
        w_hh, y, c_all, gates, h0, gx, c0 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
            grads = _regrad(ctx, _ref_lstm, (gx, w_hh, h0, c0), (dy, dhT, dcT))
            return (*grads, None, None)
        dgx, dw_hh, dh0, dc0 = ctx.backend.bwd(
            dy.contiguous(), dhT.contiguous(), dcT.contiguous(), w_hh, y, c_all, gates, h0
        )
        return dgx, dw_hh, dh0, dc0, None, None


class LSTMProjRecurrence(torch.autograd.Function):
    """The recurrence with a projection (nn.LSTM's proj_size P > 0):
    (gx[T,B,4H], w_hh[4H,P], w_hr[P,H], h0[B,P], c0[B,H]) -> (y[T,B,P], hT[B,P],
    cT[B,H]), through the backend's `proj_fwd` / `proj_bwd`; double backward as
    LSTMRecurrence, by recomputation (reference.projected)."""

    @staticmethod
    def forward(
        ctx, gx: Tensor, w_hh: Tensor, w_hr: Tensor, h0: Tensor, c0: Tensor, backend: Backend,
        save: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        y, c_all, gates, r = backend.proj_fwd(gx, w_hh, w_hr, h0, c0, save)
        ctx.backend = backend
        if save:
            ctx.save_for_backward(w_hh, w_hr, y, c_all, gates, r, h0, gx, c0)
        return y, y[-1].clone(), c_all[-1].to(gx.dtype, copy=True)

    @staticmethod
    def backward(ctx, dy: Tensor, dhT: Tensor, dcT: Tensor):
        w_hh, w_hr, y, c_all, gates, r, h0, gx, c0 = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = _regrad(ctx, reference.projected, (gx, w_hh, w_hr, h0, c0), (dy, dhT, dcT))
            return (*grads, None, None)
        grads = ctx.backend.proj_bwd(
            dy.contiguous(), dhT.contiguous(), dcT.contiguous(), w_hh, w_hr, y, c_all, gates,
            r, h0,
        )  # fmt: skip
        return (*grads, None, None)


def _ref_lstm(gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The reference forward as (y, hT, cT), in plain PyTorch ops."""
    y, c_all, _ = reference.lstm_fwd(gx, w_hh, h0, c0, False)
    return y, y[-1], c_all[-1].to(gx.dtype)


def _regrad(ctx, fwd, saved: tuple[Tensor, ...], douts: tuple[Tensor, ...]) -> list[Tensor | None]:
    """The input gradients as a graph autograd can differentiate again: `fwd`
    (plain PyTorch ops) recomputed on the saved inputs, differentiated by autograd."""
    wanted = [i for i, need in enumerate(ctx.needs_input_grad[: len(saved)]) if need]
    # Differentiate with respect to aliases of the inputs, not the inputs: h0
    # may itself depend on w_hh (a packed sequence's earlier segment), and the
    # gradient wanted here is the partial one, through this call alone. The
    # aliases keep the graph to the inputs for the next differentiation.
    inputs = tuple(t.view_as(t) for t in saved)
    with torch.enable_grad():
        outs = fwd(*inputs)
    grads = torch.autograd.grad(
        outs, [inputs[i] for i in wanted], douts, create_graph=True, allow_unused=True
    )
    out: list[Tensor | None] = [None] * len(saved)
    for i, g in zip(wanted, grads):
        out[i] = g if g is not None else torch.zeros_like(inputs[i])
    return out
