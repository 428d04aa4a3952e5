"""The `cpu` and `cuda` backends: the compiled ops in charrnn_fast._C.

Both call torch.ops.charrnn_fast.lstm_fwd / lstm_bwd; the dispatcher routes to
the C++ CPU loop (csrc/lstm_cpu.cpp) or the CUDA kernels (csrc/cuda/) by the
device of the tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast import _ops
from charrnn_fast.backends import Backend

_CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fwd(gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool):
    return torch.ops.charrnn_fast.lstm_fwd(gx, w_hh, h0, c0, training)


def _bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0):
    return torch.ops.charrnn_fast.lstm_bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0)


def _why_not_cpu(gx: Tensor, w_hh: Tensor) -> str | None:
    if _ops.load_error() is not None:
        return _ops.load_error()
    if gx.device.type != "cpu":
        return f"tensors are on {gx.device}, this backend runs on cpu"
    if gx.dtype not in _CPU_DTYPES:
        return f"dtype {gx.dtype} unsupported (expected one of {_CPU_DTYPES})"
    return None


def _why_not_cuda(gx: Tensor, w_hh: Tensor) -> str | None:
    if _ops.load_error() is not None:
        return _ops.load_error()
    if not _ops.with_cuda:
        return "charrnn_fast._C was built without CUDA (no nvcc or CHARRNN_FAST_CUDA=0)"
    if gx.device.type != "cuda":
        return f"tensors are on {gx.device}, this backend runs on cuda"
    if gx.dtype not in _CUDA_DTYPES:
        return f"dtype {gx.dtype} unsupported (expected one of {_CUDA_DTYPES})"
    return None


CPU = Backend("cpu", _fwd, _bwd, _why_not_cpu, "fused C++ time loop (csrc/lstm_cpu.cpp)")
CUDA = Backend("cuda", _fwd, _bwd, _why_not_cuda, "fused CUDA kernels (csrc/cuda/)")
