"""The input projection of the CPU backend through oneDNN, with its own backward.

Why: nn.LSTM on the CPU runs oneDNN's RNN primitive, and on some CPUs (AMD
EPYC) oneDNN's fp32 GEMM is about twice as fast as the MKL sgemm behind
F.linear (docs/performance.md, "oneDNN for the GEMMs inside the CPU loop, our
kernels for the projection", holds the measurements). The input projection is
half of an LSTM's flops, so the cpu backend routes it, forward and backward,
through mkldnn::_linear_pointwise (backends/cpu.py), with AVX-512 on weights
packed by mkldnn::_reorder_linear_weight (the ops PyTorch's inductor uses for
CPU linears; see _PACK for AVX2). Those are internal ops; where they are
missing, F.linear is used.
The backward's GEMMs run charrnn_fast's own kernels where they measured
faster: dW always (mm_tn), dx for small weights (mm_nt, `_input_grad`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn_fast import _ops


def _available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


# Decided once at import: torch.compile should not trace the probing.
AVAILABLE = _available()


def serves(x: Tensor) -> bool:
    """Whether the input projection of x[..., I] can go through oneDNN (CPU fp32)."""
    return AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float32


# Whether to hand oneDNN its weight as it is (AVX2) or packed first by
# _reorder_linear_weight (AVX-512). With AVX2 the plain weight gives the same
# results, bit for bit, at the same GEMM speed without the reorder's copy
# (1-3% of char-rnn's fwd+bwd); with AVX-512 only the packed form has been
# measured (docs/performance.md).
_PACK = _ops.cpu_vector_width() != 8


def _mm_nt(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """a[M,K] @ b[N,K]^T (+ bias[N]) -> [M,N], fp32, contiguous inputs."""
    if _PACK:
        b = torch.ops.mkldnn._reorder_linear_weight(b, a.shape[0])
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _input_grad(gy: Tensor, w: Tensor) -> Tensor:
    """gy[M,N] @ w[N,K] -> [M,K]. Small weights (char-rnn sizes): charrnn_fast's
    own kernel reads w's transpose in place, where oneDNN needs a transposed copy
    and a reorder on every call (ours is faster there: docs/performance.md);
    larger ones: oneDNN (our packing, one thread, costs more there)."""
    if _ops.load_error() is None and w.numel() <= 1 << 18:
        return torch.ops.charrnn_fast.mm_nt(gy, w.t(), None)
    return _mm_nt(gy, w.t().contiguous())


def _mm_tn(a: Tensor, b: Tensor) -> Tensor:
    """a[M,N]^T @ b[M,K] -> [N,K] (torch.mm where the compiled op is missing)."""
    if _ops.load_error() is None:
        return torch.ops.charrnn_fast.mm_tn(a, b)
    return a.t().mm(b)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        """x[M,I], w[N,I], b[N] or None -> x w^T + b, [M,N]."""
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _mm_nt(x, w, b)

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, w = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: the gradients must be differentiable, so plain
            # autograd-visible matmuls instead of the compiled GEMMs.
            dx = gy @ w if ctx.needs_input_grad[0] else None
            dw = gy.t() @ x if ctx.needs_input_grad[1] else None
            db = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
            return dx, dw, db
        gy = gy.contiguous()
        dx = _input_grad(gy, w) if ctx.needs_input_grad[0] else None
        # dW = gy^T x: charrnn_fast's own kernel reads both in place (MKL's
        # sgemm behind mm runs at half of oneDNN's speed on AMD EPYC).
        dw = _mm_tn(gy, x) if ctx.needs_input_grad[1] else None
        db = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """F.linear for CPU fp32 through oneDNN. x[..., I], w[N, I], b[N] -> [..., N]."""
    if torch.compiler.is_compiling() or x.numel() == 0:
        return F.linear(x, w, b)  # inductor makes its own choice of GEMM
    out = _Linear.apply(x.reshape(-1, x.shape[-1]).contiguous(), w.contiguous(), b)
    return out.view(*x.shape[:-1], w.shape[0])
