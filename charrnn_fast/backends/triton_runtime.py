"""How the Triton kernels run in this process (docs/DESIGN.md, "Backends"):
whether triton imports, whether the kernels are interpreted or compiled, the
kernel modules themselves, and the precision of fp32 dot products.

The @triton.jit modules are imported at the first call, never at package
import: @triton.jit decides when its module is imported whether kernels are
compiled or interpreted, and TRITON_INTERPRET=1 (the interpreter, on CPU
tensors) must be set before that. Nothing here imports triton at module import.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from types import ModuleType

import torch
from torch import Tensor

# The kernel module of each path of kernels/plan.py: each has forward() and
# backward() with the same arguments (the tensors, then a plan.Launch).
KERNEL_MODULES = {
    "small": "charrnn_fast.kernels.lstm_small",
    "persistent": "charrnn_fast.kernels.lstm_persistent",
    "stepwise": "charrnn_fast.kernels.lstm_stepwise",
}
_import_error: list[str | None] = []  # memo of import_error(): import triton once


def interpreting() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors under triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def import_error() -> str | None:
    """Why triton cannot be imported, or None (asked once per process)."""
    if not _import_error:
        try:
            import triton  # noqa: F401
        except ImportError as e:
            _import_error.append(f"triton cannot be imported ({e})")
        else:
            _import_error.append(None)
    return _import_error[0]


def stale_kernels() -> str | None:
    """Why the already imported kernels no longer match TRITON_INTERPRET, or None."""
    for name in KERNEL_MODULES.values():
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "INTERPRET", interpreting()) != interpreting():
            return (
                f"TRITON_INTERPRET changed after {name} was imported (kernels were "
                f"{'interpreted' if mod.INTERPRET else 'compiled'}): set it before the first call"
            )
    return None


def kernels() -> dict[str, ModuleType]:
    """The kernel module of each path ("small", "persistent", "stepwise"),
    imported on first use."""
    stale = stale_kernels()
    if stale is not None:
        raise RuntimeError(stale)
    return {path: importlib.import_module(n) for path, n in KERNEL_MODULES.items()}


FP32_ENV = "CHARRNN_FAST_TRITON_FP32"


def fp32_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for fp32 operands (ignored for bf16/fp16;
    docs/DESIGN.md, "Numerics").

    By default it follows torch's own matmul setting: exact fp32 ("ieee", FMA,
    no tensor cores) unless the user allowed TF32
    (torch.set_float32_matmul_precision("high")). CHARRNN_FAST_TRITON_FP32 =
    ieee | tf32x3 | tf32 overrides it, for benchmarks (tf32x3: three TF32
    products, about fp32 accuracy on tensor cores).
    """
    forced = os.environ.get(FP32_ENV)
    if forced:
        if forced not in ("ieee", "tf32x3", "tf32"):
            raise ValueError(f"{FP32_ENV} must be ieee, tf32x3 or tf32, got {forced!r}")
        return forced
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def device_guard(t: Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current device: make it the tensors' device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
