"""The `cpu` backend: the C++ time loop of csrc/cpu/ (charrnn_fast._C), and its
input projection through oneDNN (backends/onednn.py).

The recurrence is torch.ops.charrnn_fast.lstm_fwd / lstm_bwd; the dispatcher
routes CPU tensors to csrc/cpu/lstm_cpu.cpp, which checks the arguments
(csrc/checks.h).

The drop-in module must never be slower than the nn.LSTM it replaces, so
float32 calls on the CPU go to ATen's fused LSTM (oneDNN's RNN primitive,
exactly what nn.LSTM computes) where that was measured faster
(bench/results/2026-12-0*-cpu-*): every forward-only call (nothing needs a
gradient: inference, eval, sampling: oneDNN's forward runs near the FMA peak),
and calls that need gradients except inside the box where our kernels were
measured faster (`_ours_wins_training`: 128 <= H <= 512 with AVX-512, 128 <=
H <= 256 with AVX2; T >= 50 and at least 12 rows per thread). A call that
needs gradients in eval mode runs ATen with train=True and no dropout, so
backward works as in training.
torch.compile graphs always run our ops. CHARRNN_FAST_CPU_FORWARD=ours and
CHARRNN_FAST_CPU_TRAIN=ours|aten override the choice (tests, benchmarks).
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


# Largest H at which our kernels were measured faster, by vector width.
_TOP_H = {16: 512, 8: 256}


def _ours_wins_training(T: int, B: int, H: int, L: int) -> bool:
    """Whether our kernels beat ATen's fused LSTM for a call that needs gradients:
    only inside the box where that was measured (bench/results/, see the module
    docstring); everywhere else ATen serves, which is what nn.LSTM runs."""
    # AVX-512 (Zen 5, bench/results/2026-12-01-cpu-amd-epyc-*): ours 1.04-1.6x
    # at H = 128 and 512, T = 50 and 100, 1 or 2 threads; 0.84-0.91x at
    # H = 1024 (W_hh, 16 MB, no longer fits in cache and oneDNN streams it
    # better); 1.0x at B = 1. Each thread owns whole rows, so below ~12 rows
    # per thread it idles. Short sequences: each call packs W_hh and W_ih and
    # allocates its buffers, a fixed cost that T = 1-5 does not amortise
    # (0.61-0.81x on a Zen 3, bench/results/2026-12-01-cpu-zen3-avx2.md).
    # AVX2 (that Zen 3, bench/results/2026-12-02-cpu-zen3-avx2.md): since the
    # forward step's update left the GEMM's tiles and dW went to MKL, 1.01-1.33x
    # at H = 128 and 256 with glibc's default malloc, 0.99-1.19x where
    # allocation is free; at H = 512 0.89-1.02x, so ATen serves there. (Those
    # AVX2 figures need MKL: without it dW runs gemm_tn, 1.5-2.6x slower.)
    width = _ops.cpu_vector_width()
    return (
        128 <= H <= _TOP_H.get(width, 0)
        and (width == 16 or torch.backends.mkl.is_available())
        and T >= 50
        and 12 * torch.get_num_threads() <= B
    )


def aten_serves(
    x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor], backend: str | None,
    needs_grad: bool,
) -> bool:  # fmt: skip
    """Whether a whole-stack call on x[T,B,I] runs ATen's fused LSTM (see the module
    docstring): CPU float32 with oneDNN, the `cpu` backend, not under torch.compile;
    forward-only calls always, calls that need gradients where ours is slower."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    if not torch.backends.mkldnn.is_available() or not torch._C._get_mkldnn_enabled():
        return False  # without oneDNN, ATen's CPU LSTM is a plain loop: ours is faster
    if (backends_requested(backend) or "cpu") != "cpu" or _why_not(x, weights[1]) is not None:
        return False
    if not needs_grad:
        return os.environ.get("CHARRNN_FAST_CPU_FORWARD", "auto") != "ours"
    choice = os.environ.get("CHARRNN_FAST_CPU_TRAIN", "auto")
    if choice in ("ours", "aten"):
        return choice == "aten"
    T, B = x.shape[:2]
    return not _ours_wins_training(T, B, weights[1].shape[1], len(hx[0]))


BACKEND = Backend(
    "cpu",
    fwd,
    bwd,
    _why_not,
    "fused C++ time loop (csrc/cpu/; fp32 kernels: "
    + {16: "AVX-512", 8: "AVX2"}.get(_ops.cpu_vector_width(), "none, general path")
    + "), oneDNN input projection; fp32 calls run ATen's fused LSTM (oneDNN RNN "
    "primitive) where it is faster: forward-only calls, and calls that need gradients "
    "unless 128 <= H <= 512 (AVX-512) or 256 (AVX2), T >= 50 and B >= 12 x threads",
    project=_project,
)
