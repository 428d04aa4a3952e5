"""Loads the compiled ops (`charrnn_fast._C`) and registers their fake kernels.

Importing `_C` runs its TORCH_LIBRARY registrations. When the extension is
missing (a source checkout that was never built) the package still imports:
the reference backend works, and `load_error()` says why the others do not.
"""

from __future__ import annotations

import torch

from charrnn_fast.contract import acc_dtype

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
