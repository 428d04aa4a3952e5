"""The `triton` backend: the op contract on the Triton kernels of
charrnn_fast.kernels (docs/DESIGN.md, "Backends", "The op contract").

Per call and direction: the plan (kernels/plan.py, from the device's limits
and the path forced by CHARRNN_FAST_PATH, see backends/plans.py), then the
launch of lstm_small / lstm_persistent / lstm_stepwise. If the compiler
reports that the planned kernel does not fit the device, or a persistent grid
cannot be co-resident (the occupancy check or the cooperative launch of
lstm_persistent.py: triton's OutOfResources, raised before anything ran), the
next path down the ladder small -> persistent -> persistent streaming W_hh ->
stepwise runs instead, with one warning, and is remembered (plans.FALLBACKS): the fallback
policy of docs/DESIGN.md, "Planners". How the kernels are imported and run
(interpreter, fp32 precision) is triton_runtime.py.

Legend: T steps, B batch, H hidden units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from charrnn_fast.backends import plans
from charrnn_fast.backends import triton_runtime as rt
from charrnn_fast.backends.base import Backend
from charrnn_fast.contract import check_bwd, check_fwd
from charrnn_fast.kernels import plan as planner

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Plan arguments to try, in order, when the compiler refuses a kernel.
_LADDER: tuple[dict[str, Any], ...] = (
    {"path": "small"},
    {"path": "persistent"},
    {"path": "persistent", "resident": False},
    {"path": "stepwise"},
)


def _rung(p: planner.TritonPlan) -> int:
    """p's place on _LADDER."""
    if p.path == "small":
        return 0
    if p.path == "persistent":
        return 1 if p.w_resident else 2
    return 3


def _why_not(gx: Tensor, w_hh: Tensor) -> str | None:
    forced = plans.forced_path("triton")  # a malformed setting raises here, naming it
    reason = rt.import_error() or rt.stale_kernels()
    if reason is not None:
        return reason
    dev = gx.device.type
    if dev == "cpu" and not rt.interpreting():
        return "tensors are on cpu: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1)"
    if dev not in ("cpu", "cuda"):
        return f"tensors are on {gx.device}: Triton kernels need CUDA tensors"
    if gx.dtype not in _DTYPES:
        return f"dtype {gx.dtype} unsupported (expected one of {_DTYPES})"
    if gx.dim() != 3 or w_hh.dim() != 2:
        return f"expected x [T, B, *] and w_hh [4H, H], got {tuple(gx.shape)}, {tuple(w_hh.shape)}"
    T, B, G = gx.shape[0], gx.shape[1], w_hh.shape[0]
    if B * G >= 2**31 or w_hh.numel() >= 2**31:
        return f"B*4H = {B * G} and 4H*H = {w_hh.numel()} must stay below 2**31 (int32 offsets)"
    for direction in plans.DIRECTIONS:
        path = forced.get(direction)
        if path is None:
            continue
        try:
            limits = plans.device_limits(gx.device)
            planner.make_plan(B, G // 4, gx.dtype, limits, path=path, T=max(T, 1))
        except ValueError as e:
            return f"{forced.source} forces the {path} path for {direction}, but {e}"
    return None


def _plan(
    direction: str, B: int, H: int, T: int, like: Tensor, plan_kw: dict
) -> tuple[planner.TritonPlan, bool]:
    """(the plan to launch, whether it was forced: by plan_kw or the environment)."""
    limits = plans.device_limits(like.device)
    if plan_kw:
        return planner.make_plan(B, H, like.dtype, limits, T=T, **plan_kw), True
    path = plans.forced_path("triton").get(direction)
    if path is not None:
        return planner.make_plan(B, H, like.dtype, limits, path=path, T=T), True
    key = plans.fallback_key("triton", direction, like.device, like.dtype, B, H)
    remembered = plans.FALLBACKS.get(key)
    kw = dict(remembered) if remembered is not None else {}
    return planner.make_plan(B, H, like.dtype, limits, T=T, **kw), False


def _run(direction: str, B: int, H: int, T: int, like: Tensor, launch: Callable, plan_kw: dict):
    """launch(plan) with the plan for (B, H), degrading on OutOfResources."""
    from triton.runtime.errors import OutOfResources

    plan, forced = _plan(direction, B, H, T, like, plan_kw)
    limits = plans.device_limits(like.device)
    while True:
        try:
            return launch(plan)
        except OutOfResources as e:
            if forced:
                raise
            for kw in _LADDER[_rung(plan) + 1 :]:
                try:
                    nxt = planner.make_plan(B, H, like.dtype, limits, T=T, **kw)
                except ValueError:  # e.g. no persistent grid fits this batch
                    continue
                break
            else:
                raise
            warnings.warn(
                f"charrnn_fast triton {direction}: the {plan.path} kernel [{plan.geometry}] "
                f"does not fit this device (B={B}, H={H}, {like.dtype}: {e}); using "
                f"{nxt.path} [{nxt.geometry}]",
                stacklevel=4,
            )
            key = plans.fallback_key("triton", direction, like.device, like.dtype, B, H)
            plans.FALLBACKS.remember(key, tuple(kw.items()))
            plan = nxt


def _launcher(like: Tensor, w_hh: Tensor, call: Callable) -> Callable:
    """plan -> call(kernel module of plan.path, plan.Launch): what _run launches,
    once like [T, B, 4H] and w_hh are known to be usable (RuntimeError otherwise)."""
    reason = _why_not(like, w_hh)
    if reason is not None:
        raise RuntimeError(f"charrnn_fast triton backend: {reason}")
    modules = rt.kernels()
    prec = rt.fp32_precision(like.dtype)
    limits = plans.device_limits(like.device)
    return lambda p: call(modules[p.path], planner.Launch(p, prec, limits))


def lstm_fwd(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool, **plan_kw
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H] fp32,
    gates[T,B,4H] (empty when not training).

    plan_kw (path, block_b, block_j, resident) forces kernels/plan.py's choice
    (tests, benchmarks).
    """
    T, B, H = check_fwd(gx, w_hh, h0, c0)
    launch = _launcher(gx, w_hh, lambda k, run: k.forward(gx, w_hh, h0, c0, training, run))
    with rt.device_guard(gx):
        return _run("fwd", B, H, max(T, 1), gx, launch, plan_kw)


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
    args = (dy, dhT, dcT, w_hh, c_all, gates)
    launch = _launcher(dy.new_empty((T, B, 4 * H)), w_hh, lambda k, run: k.backward(*args, run))
    with rt.device_guard(y):
        dgx, dh0, dc0 = _run("bwd", B, H, max(T, 1), y, launch, plan_kw)
        # dW_hh = sum_t dgates_t^T h_{t-1}: one GEMM over all steps (h_{-1} = h0),
        # in the input dtype with the GEMM's fp32 accumulation.
        if T * B == 0:
            dw = torch.zeros_like(w_hh)
        else:
            h_prev = torch.cat((h0.unsqueeze(0), y[:-1]))
            dw = dgx.view(T * B, 4 * H).t() @ h_prev.view(T * B, H)
    return dgx, dw, dh0, dc0


def plan_report(
    B: int, H: int, dtype: torch.dtype, device: torch.device, limits: plans.DeviceLimits
) -> list[plans.Plan]:
    """The forward and backward plans a call of batch B, hidden size H would get
    (the forced path and remembered fallbacks included), for backends.report()."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype} unsupported (expected one of {_DTYPES})")
    out = []
    forced = plans.forced_path("triton")
    for direction in plans.DIRECTIONS:
        path = forced.get(direction)
        key = plans.fallback_key("triton", direction, device, dtype, B, H)
        remembered = None if path else plans.FALLBACKS.get(key)
        kw = dict(remembered) if remembered is not None else {"path": path}
        try:
            p = planner.make_plan(B, H, dtype, limits, **kw)
        except ValueError as e:
            out.append(plans.Plan("triton", direction, path or "?", "", f"{forced.source}: {e}"))
            continue
        why = p.why
        if remembered is not None:
            why = "a fallback remembered after the compiler refused a faster kernel; " + why
        elif path is not None:
            why = f"{forced.source}: {why}"
        out.append(plans.Plan("triton", direction, p.path, p.geometry, why))
    return out


BACKEND = Backend(
    "triton",
    lstm_fwd,
    lstm_bwd,
    _why_not,
    "Triton kernels (kernels/): small-H per-batch-tile loop, persistent split-H grid, stepwise",
    plan=plan_report,
)
