"""The `triton` backend: the op contract on the Triton kernels of charrnn_fast.kernels.

Kernel choice per call (kernels/plan.py): the small-H kernel (one program per
batch tile, all of W_hh on chip) when W_hh fits one SM, else the persistent
kernel (hidden units split over at most SM-count programs, a barrier per step),
else the stepwise relaunch. If the compiler reports that a kernel does not fit
the device (triton OutOfResources), the next path down is used, with a warning.

The @triton.jit modules are imported at the first call, never at package import:
@triton.jit decides when the module is imported whether kernels are compiled or
interpreted, and TRITON_INTERPRET=1 (the interpreter, on CPU tensors) must be set
before that. Legend: T steps, B batch, H hidden units.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
from types import ModuleType

import torch
from torch import Tensor

from charrnn_fast.backends import Backend
from charrnn_fast.contract import check_bwd, check_fwd

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_KERNELS = ("charrnn_fast.kernels.lstm_small", "charrnn_fast.kernels.lstm_persistent")
_import_error: list[str | None] = []  # memo of _triton_error()
_degraded: dict[tuple, dict] = {}  # (B, H, dtype, device) -> plan kwargs that did fit


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_error() -> str | None:
    if not _import_error:
        try:
            import triton  # noqa: F401
        except ImportError as e:
            _import_error.append(f"triton cannot be imported ({e})")
        else:
            _import_error.append(None)
    return _import_error[0]


def _stale_kernels() -> str | None:
    for name in _KERNELS:
        mod = sys.modules.get(name)
        if mod is not None and _interpreting() != mod.INTERPRET:
            return (
                f"TRITON_INTERPRET changed after {name} was imported (kernels were "
                f"{'interpreted' if mod.INTERPRET else 'compiled'}): set it before the first call"
            )
    return None


def _why_not(gx: Tensor, w_hh: Tensor) -> str | None:
    reason = _triton_error() or _stale_kernels()
    if reason is not None:
        return reason
    dev = gx.device.type
    if dev == "cpu" and not _interpreting():
        return "tensors are on cpu: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1)"
    if dev not in ("cpu", "cuda"):
        return f"tensors are on {gx.device}: Triton kernels need CUDA tensors"
    if gx.dtype not in _DTYPES:
        return f"dtype {gx.dtype} unsupported (expected one of {_DTYPES})"
    if gx.dim() != 3 or w_hh.dim() != 2:
        return f"expected x [T, B, *] and w_hh [4H, H], got {tuple(gx.shape)}, {tuple(w_hh.shape)}"
    B, G = gx.shape[1], w_hh.shape[0]
    if B * G >= 2**31 or w_hh.numel() >= 2**31:
        return f"B*4H = {B * G} and 4H*H = {w_hh.numel()} must stay below 2**31 (int32 offsets)"
    from charrnn_fast.kernels.plan import make_plan

    try:
        make_plan(B, G // 4, gx.dtype, gx.device)
    except ValueError as e:  # only a forced CHARRNN_FAST_TRITON_PATH can fail
        return str(e)
    return None


def _prec(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 operands (ignored for bf16/fp16).

    By default it follows torch's own matmul setting: exact fp32 ("ieee", FMA,
    no tensor cores) unless the user allowed TF32
    (torch.set_float32_matmul_precision("high")). CHARRNN_FAST_TRITON_FP32 =
    ieee | tf32x3 | tf32 overrides it, for benchmarks (tf32x3: three TF32
    products, about fp32 accuracy on tensor cores).
    """
    forced = os.environ.get("CHARRNN_FAST_TRITON_FP32")
    if forced:
        if forced not in ("ieee", "tf32x3", "tf32"):
            raise ValueError(
                f"CHARRNN_FAST_TRITON_FP32 must be ieee, tf32x3 or tf32, got {forced!r}"
            )
        return forced
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def _kernels() -> tuple[ModuleType, ModuleType]:
    stale = _stale_kernels()
    if stale is not None:
        raise RuntimeError(stale)
    small, persistent = (importlib.import_module(n) for n in _KERNELS)
    return small, persistent


# What to try when the compiler says a kernel does not fit the device
# (triton OutOfResources, raised before anything is launched).
_FALLBACKS = (
    {"path": "persistent"},
    {"path": "persistent", "resident": False},
    {"path": "stepwise"},
)


def _rank(plan) -> int:
    if plan.path == "small":
        return 0
    if plan.path == "persistent":
        return 1 if plan.w_resident else 2
    return 3


def _run(B: int, H: int, like: Tensor, launch, plan_kw: dict):
    """launch(plan) with the plan for (B, H), degrading on OutOfResources."""
    from triton.runtime.errors import OutOfResources

    from charrnn_fast.kernels.plan import make_plan

    key = (B, H, like.dtype, like.device)
    if not plan_kw and key in _degraded:
        plan_kw = _degraded[key]
        forced = False
    else:
        forced = bool(plan_kw)
    plan = make_plan(B, H, like.dtype, like.device, **plan_kw)
    while True:
        try:
            return launch(plan)
        except OutOfResources as e:
            if forced:
                raise
            for kw in _FALLBACKS[_rank(plan) :]:
                try:
                    nxt = make_plan(B, H, like.dtype, like.device, **kw)
                except ValueError:  # e.g. no persistent grid fits this batch
                    continue
                break
            else:
                raise
            warnings.warn(
                f"charrnn_fast triton: the {plan} kernel does not fit this device "
                f"(B={B}, H={H}, {like.dtype}: {e}); using {nxt}",
                stacklevel=4,
            )
            _degraded[key] = kw
            plan = nxt


def _device_guard(t: Tensor):
    # Triton launches on the current device: make it the tensors' device.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def lstm_fwd(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool, **plan_kw
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H] fp32, gates.

    plan_kw (path, block_b, block_j) forces kernels/plan.py's choice (tests, benchmarks).
    """
    T, B, H = check_fwd(gx, w_hh, h0, c0)
    reason = _why_not(gx, w_hh)
    if reason is not None:
        raise RuntimeError(f"charrnn_fast triton backend: {reason}")
    small, persistent = _kernels()
    prec = _prec(gx.dtype)

    def launch(p):
        if p.path == "small":
            return small.forward(
                gx, w_hh, h0, c0, training, block_b=p.block_b, num_warps=p.num_warps, prec=prec
            )
        return persistent.forward(
            gx, w_hh, h0, c0, training, block_b=p.block_b, block_j=p.block_j,
            block_k=p.block_k, w_resident=p.w_resident, persistent=p.path == "persistent",
            num_warps=p.num_warps, prec=prec,
        )  # fmt: skip

    with _device_guard(gx):
        return _run(B, H, gx, launch, plan_kw)


def lstm_bwd(
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
    w_hh: Tensor,
    y: Tensor,
    c_all: Tensor,
    gates: Tensor,
    h0: Tensor,
    **plan_kw,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """dy[T,B,H], dhT[B,H], dcT[B,H], w_hh[4H,H], y[T,B,H], c_all[T+1,B,H] fp32,
    gates[T,B,4H], h0[B,H] -> dgx[T,B,4H], dw_hh[4H,H], dh0[B,H], dc0[B,H]."""
    T, B, H = check_bwd(dy, dhT, dcT, w_hh, y, c_all, gates, h0)
    reason = _why_not(dy.new_empty((0, B, 4 * H)), w_hh)
    if reason is not None:
        raise RuntimeError(f"charrnn_fast triton backend: {reason}")
    small, persistent = _kernels()
    prec = _prec(y.dtype)

    def launch(p):
        if p.path == "small":
            return small.backward(
                dy,
                dhT,
                dcT,
                w_hh,
                c_all,
                gates,
                block_b=p.block_b,
                num_warps=p.num_warps,
                prec=prec,
            )
        return persistent.backward(
            dy, dhT, dcT, w_hh, c_all, gates, block_b=p.block_b, block_j=p.block_j,
            block_k=p.block_k, w_resident=p.w_resident, persistent=p.path == "persistent",
            num_warps=p.num_warps, prec=prec,
        )  # fmt: skip

    with _device_guard(y):
        dgx, dh0, dc0 = _run(B, H, y, launch, plan_kw)
        # dW_hh = sum_t dgates_t^T h_{t-1}: one GEMM over all steps (h_{-1} = h0),
        # in the input dtype with the GEMM's fp32 accumulation.
        if T * B == 0:
            dw = torch.zeros_like(w_hh)
        else:
            h_prev = torch.cat((h0.unsqueeze(0), y[:-1]))
            dw = dgx.view(T * B, 4 * H).t() @ h_prev.view(T * B, H)
    return dgx, dw, dh0, dc0


BACKEND = Backend(
    "triton",
    lstm_fwd,
    lstm_bwd,
    _why_not,
    "Triton kernels (kernels/): small-H per-batch-tile loop, persistent split-H grid",
)
