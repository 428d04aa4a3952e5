"""The `cuda` backend: the CUDA kernels of csrc/cuda/ (charrnn_fast._C;
docs/DESIGN.md, "Backends").

The recurrence is torch.ops.charrnn_fast.lstm_fwd / lstm_bwd, the same ops as
the cpu backend; the dispatcher routes CUDA tensors to csrc/cuda/lstm_cuda.cpp,
which checks the arguments (csrc/checks.h) and plans the kernel
(csrc/cuda/plan.h; docs/DESIGN.md, "Planners"). The planner stays in C++, where
it shares the shared-memory layout with the kernels; `plan_report` asks it,
through torch.ops.charrnn_fast.cuda_plan_for, for the (path, geometry, why) of
plans.Plan.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast import _ops
from charrnn_fast.backends import plans
from charrnn_fast.backends.base import Backend
from charrnn_fast.backends.cpu import bwd, fwd

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _why_not(x: Tensor, w_hh: Tensor) -> str | None:
    # A malformed CHARRNN_FAST_PATH, or a former variable still set, raises
    # here, naming it.
    plans.forced_path("cuda")
    if _ops.load_error() is not None:
        return _ops.load_error()
    if not _ops.with_cuda:
        return "charrnn_fast._C was built without CUDA (no nvcc or CHARRNN_FAST_CUDA=0)"
    if x.device.type != "cuda":
        return f"tensors are on {x.device}, this backend runs on cuda"
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} unsupported (expected one of {DTYPES})"
    # setup.py builds for 7.5+ (the stepwise path; persistent needs 8.0, which
    # csrc/cuda/choose.cpp checks). get_device_properties, not get_device_capability:
    # Dynamo folds it to a constant.
    prop = torch.cuda.get_device_properties(x.device)
    if (prop.major, prop.minor) < (7, 5):
        return f"compute capability {prop.major}.{prop.minor}: the CUDA kernels need 7.5 or newer"
    return None


def plan_report(
    B: int, H: int, dtype: torch.dtype, device: torch.device, limits: plans.DeviceLimits
) -> list[plans.Plan]:
    """The forward and backward plans of the C++ planner for batch B, hidden
    size H: on `device` when it is a CUDA device (with its occupancy check),
    else for `limits` alone (no GPU needed, a CUDA build of charrnn_fast._C is)."""
    reason = _ops.load_error() or (
        None if _ops.with_cuda else "charrnn_fast._C was built without CUDA"
    )
    if reason is None and device.type != "cuda" and limits is plans.INTERPRETER:
        reason = "no CUDA device to plan for (report(limits=plans.H100) plans for a nominal H100)"
    if reason is not None:
        raise RuntimeError(reason)
    plans.forced_path("cuda")  # a malformed or former setting raises here
    index = -1
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
    lim = [limits.sms, limits.smem_optin, limits.l2_bytes]
    s = torch.ops.charrnn_fast.cuda_plan_for(B, H, dtype, lim, index)
    return [plans.Plan("cuda", d, *s[3 * i : 3 * i + 3]) for i, d in enumerate(plans.DIRECTIONS)]


BACKEND = Backend("cuda", fwd, bwd, _why_not, "fused CUDA kernels (csrc/cuda/)", plan=plan_report)
