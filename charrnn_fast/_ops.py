"""Loads the compiled ops (`charrnn_fast._C`) and registers their fake kernels.

Importing `_C` runs its TORCH_LIBRARY registrations. When the extension is
missing (a source checkout that was never built) the package still imports:
the reference backend works, and `load_error()` says why the others do not.
"""

from __future__ import annotations

import os

import torch

from charrnn_fast.contract import acc_dtype

# Read by csrc/cpu/fused.cpp when _C loads: run narrower CPU kernels than the
# CPU allows (the tests use it to cover the AVX2 and general paths).
# A bad value is reported by the first LSTM call (backends/dispatch.py checks
# every variable), not here: an import error would reach a command-line user as
# a traceback before the CLI could say it in one line.
_ISA = os.environ.get("CHARRNN_FAST_CPU_ISA", "auto")


def isa_error() -> str | None:
    """Why CHARRNN_FAST_CPU_ISA's value is refused, or None."""
    if _ISA in ("auto", "avx512", "avx2", "none"):
        return None
    return f"CHARRNN_FAST_CPU_ISA must be auto, avx512, avx2 or none, got {_ISA!r}"


_error: str | None = None
try:
    from charrnn_fast import _C

    with_cuda = bool(_C.with_cuda)
except ImportError as exc:  # not built: only the reference backend is usable
    _error = f"charrnn_fast._C could not be imported ({exc}); run `pip install -e . --no-build-isolation`"
    with_cuda = False


def load_error() -> str | None:
    """Why the compiled ops are unavailable, or None when they loaded."""
    return _error


def cpu_vector_width() -> int:
    """Floats per vector of the fused fp32 CPU kernels: 16 (AVX-512), 8 (AVX2), 0 (none,
    or not built)."""
    return 0 if _error is not None else int(getattr(_C, "cpu_vector_width", 0))


if _error is None:

    @torch.library.register_fake("charrnn_fast::lstm_fwd")
    def _lstm_fwd_fake(gx, w_hh, h0, c0, training):
        T, B, G = gx.shape
        H = G // 4
        y = gx.new_empty((T, B, H))
        c_all = gx.new_empty((T + 1, B, H), dtype=acc_dtype(gx.dtype))
        gates = gx.new_empty((T, B, G)) if training else gx.new_empty((0,))
        return y, c_all, gates

    @torch.library.register_fake("charrnn_fast::lstm_bwd")
    def _lstm_bwd_fake(dy, dhT, dcT, w_hh, y, c_all, gates, h0):
        T, B, H = y.shape
        return (
            y.new_empty((T, B, 4 * H)),
            w_hh.new_empty(w_hh.shape),
            h0.new_empty(h0.shape),
            h0.new_empty(h0.shape),
        )

    @torch.library.register_fake("charrnn_fast::lstm_proj_fwd")
    def _lstm_proj_fwd_fake(gx, w_hh, w_hr, h0, c0, training):
        T, B, G = gx.shape
        H, P = G // 4, w_hr.shape[0]
        acc = acc_dtype(gx.dtype)
        y = gx.new_empty((T, B, P))
        c_all = gx.new_empty((T + 1, B, H), dtype=acc)
        gates = gx.new_empty((T, B, G) if training else (0,), dtype=acc)
        r = gx.new_empty((T, B, H) if training else (0,), dtype=acc)
        return y, c_all, gates, r

    @torch.library.register_fake("charrnn_fast::lstm_proj_bwd")
    def _lstm_proj_bwd_fake(dy, dhT, dcT, w_hh, w_hr, y, c_all, gates, r, h0):
        T, B, _ = y.shape
        return (
            y.new_empty((T, B, w_hh.shape[0])),
            w_hh.new_empty(w_hh.shape),
            w_hr.new_empty(w_hr.shape),
            h0.new_empty(h0.shape),
            dcT.new_empty(dcT.shape),
        )

    @torch.library.register_fake("charrnn_fast::mm_tn")
    def _mm_tn_fake(a, b):
        return a.new_empty((a.shape[1], b.shape[1]))

    @torch.library.register_fake("charrnn_fast::mm_nt")
    def _mm_nt_fake(a, w, bias):
        return a.new_empty((a.shape[0], w.shape[0]))

    @torch.library.register_fake("charrnn_fast::lstm_lm_generate")
    def _lstm_lm_generate_fake(tokens, h0, c0, embed, weights, head_w, head_b, steps, *args):
        return (
            tokens.new_empty((tokens.shape[0], steps)),
            h0.new_empty(h0.shape),
            c0.new_empty(c0.shape),
        )
