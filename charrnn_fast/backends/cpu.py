"""The `cpu` backend: the C++ time loop of csrc/cpu/ (charrnn_fast._C), and its
input projection through oneDNN (backends/onednn.py).

The recurrence is torch.ops.charrnn_fast.lstm_fwd / lstm_bwd; the dispatcher
routes CPU tensors to csrc/cpu/lstm_cpu.cpp, which checks the arguments
(csrc/checks.h).

Forward-only calls in float32 (nothing needs a gradient: inference, eval,
sampling) go to ATen's fused LSTM instead, which on the CPU is oneDNN's RNN
primitive: measured faster than our loop for a forward alone at every preset
of bench/run.py (bench/results/), and exactly what nn.LSTM computes. Calls
that need a gradient (training, or backward in eval mode, which ATen's
fused path does not save for) run our kernels, as do torch.compile graphs.
CHARRNN_FAST_CPU_FORWARD=ours runs our kernels for forward-only calls too.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn_fast import _ops
from charrnn_fast.backends import Backend, onednn
from charrnn_fast.backends import requested as backends_requested

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


def aten_forward_serves(
    x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor], backend: str | None
) -> bool:
    """Whether a whole-stack call on x[T,B,I] runs ATen's fused LSTM (forward only)."""
    if torch.is_grad_enabled() and (
        x.requires_grad or any(t.requires_grad for t in (*hx, *weights))
    ):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    if not torch.backends.mkldnn.is_available() or not torch._C._get_mkldnn_enabled():
        return False  # without oneDNN, ATen's CPU LSTM is a plain loop: ours is faster
    if os.environ.get("CHARRNN_FAST_CPU_FORWARD", "auto") == "ours":
        return False
    name = backends_requested(backend)
    return (name or "cpu") == "cpu" and _why_not(x, weights[1]) is None


BACKEND = Backend(
    "cpu",
    fwd,
    bwd,
    _why_not,
    "fused C++ time loop (csrc/cpu/; fp32 kernels: "
    + {16: "AVX-512", 8: "AVX2"}.get(_ops.cpu_vector_width(), "none, general path")
    + "), oneDNN input projection; fp32 forward-only calls run ATen's fused LSTM "
    "(oneDNN RNN primitive), faster there",
    project=_project,
)
