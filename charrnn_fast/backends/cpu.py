"""The `cpu` backend: the C++ time loop of csrc/cpu/ (charrnn_fast._C), and its
input projection through oneDNN (backends/onednn.py).

The recurrence is torch.ops.charrnn_fast.lstm_fwd / lstm_bwd; the dispatcher
routes CPU tensors to csrc/cpu/lstm_cpu.cpp, which checks the arguments
(csrc/checks.h).

Whether a CPU call runs this backend or ATen's fused LSTM is measured by
backends/dispatch.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn_fast import _ops
from charrnn_fast.backends import onednn
from charrnn_fast.backends.base import Backend

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def fwd(gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool):
    """The op contract's lstm_fwd (charrnn_fast/contract.py) on the compiled op."""
    return torch.ops.charrnn_fast.lstm_fwd(gx, w_hh, h0, c0, training)


def bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0):
    """The op contract's lstm_bwd (charrnn_fast/contract.py) on the compiled op."""
    return torch.ops.charrnn_fast.lstm_bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0)


def _why_not(x: Tensor, w_hh: Tensor) -> str | None:
    if _ops.load_error() is not None:
        return _ops.load_error()
    if x.device.type != "cpu":
        return f"tensors are on {x.device}, this backend runs on cpu"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} unsupported (expected one of {DTYPES})"
    return None


def _project(x: Tensor, w_ih: Tensor, b: Tensor | None) -> Tensor:
    """x[T,B,I], w_ih[4H,I], b[4H] or None -> gx[T,B,4H]: oneDNN for fp32, else F.linear."""
    if onednn.serves(x):
        return onednn.linear(x, w_ih, b)
    return F.linear(x, w_ih, b)


BACKEND = Backend(
    "cpu",
    fwd,
    bwd,
    _why_not,
    "fused C++ time loop (csrc/cpu/; fp32 kernels: "
    + {16: "AVX-512", 8: "AVX2"}.get(_ops.cpu_vector_width(), "none, general path")
    + "), oneDNN input projection; ATen's fused LSTM serves the calls where it "
    "measured faster on this machine (CHARRNN_FAST_DISPATCH)",
    project=_project,
    proj_fwd=lambda *a: torch.ops.charrnn_fast.lstm_proj_fwd(*a),
    proj_bwd=lambda *a: torch.ops.charrnn_fast.lstm_proj_bwd(*a),
)
