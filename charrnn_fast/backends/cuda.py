"""The `cuda` backend: the CUDA kernels of csrc/cuda/ (charrnn_fast._C).

The recurrence is torch.ops.charrnn_fast.lstm_fwd / lstm_bwd, the same ops as
the cpu backend; the dispatcher routes CUDA tensors to csrc/cuda/lstm_cuda.cpp,
which checks the arguments (csrc/checks.h) and plans the kernel (csrc/cuda/plan.h).
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast import _ops
from charrnn_fast.backends import Backend
from charrnn_fast.backends.cpu import bwd, fwd

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _why_not(x: Tensor, w_hh: Tensor) -> str | None:
    if _ops.load_error() is not None:
        return _ops.load_error()
    if not _ops.with_cuda:
        return "charrnn_fast._C was built without CUDA (no nvcc or CHARRNN_FAST_CUDA=0)"
    if x.device.type != "cuda":
        return f"tensors are on {x.device}, this backend runs on cuda"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} unsupported (expected one of {DTYPES})"
    # setup.py builds for 7.5+ (the stepwise path; persistent needs 8.0, which
    # lstm_cuda.cpp checks). get_device_properties, not get_device_capability:
    # Dynamo folds it to a constant.
    prop = torch.cuda.get_device_properties(x.device)
    if (prop.major, prop.minor) < (7, 5):
        return f"compute capability {prop.major}.{prop.minor}: the CUDA kernels need 7.5 or newer"
    return None


BACKEND = Backend("cuda", fwd, bwd, _why_not, "fused CUDA kernels (csrc/cuda/)")
