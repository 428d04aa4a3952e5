"""The op contract in Python: argument shapes, the accumulation type, and the checks.

The compiled backends (cpu, cuda) check their arguments in C++
(csrc/checks.h); the Python backends (reference, triton) and the fake kernels
use this file, which says the same in the same words, so every backend
rejects a malformed call with the same message. Legend: T steps, B batch, H
hidden units, G = 4H gates (order i, f, g, o). docs/DESIGN.md, "The op
contract", has the whole table.

    lstm_fwd(gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H], training)
        -> y[T,B,H], c_all[T+1,B,H] (accumulation dtype), gates[T,B,4H] or [0]
    lstm_bwd(dy[T,B,H], dhT[B,H], dcT[B,H], w_hh, y, c_all, gates, h0)
        -> dgx[T,B,4H], dw_hh[4H,H], dh0[B,H], dc0[B,H]
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation (and cell-state) dtype for inputs of `dtype`: fp64 for
    fp64 (so the fp64 chain of trust stays exact), fp32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check(name: str, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype, ref: Tensor) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"charrnn_fast: {name} must have shape {list(shape)}, got {list(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"charrnn_fast: {name} must have dtype {dtype}, got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"charrnn_fast: {name} must be on {ref.device}, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"charrnn_fast: {name} must be contiguous")


def check_fwd(gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor) -> tuple[int, int, int]:
    """Validates lstm_fwd's arguments (see the module docstring); returns (T, B, H)."""
    if w_hh.dim() != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"charrnn_fast: w_hh must have shape [4H, H], got {list(w_hh.shape)}")
    H = w_hh.shape[1]
    if gx.dim() != 3 or gx.shape[2] != 4 * H:
        raise ValueError(
            f"charrnn_fast: gx must have shape [T, B, 4H] with 4H = {4 * H}, got {list(gx.shape)}"
        )
    if gx.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"charrnn_fast: gx must be float32, float64, bfloat16 or float16, got {gx.dtype}"
        )
    T, B = gx.shape[:2]
    _check("gx", gx, (T, B, 4 * H), gx.dtype, gx)
    _check("w_hh", w_hh, (4 * H, H), gx.dtype, gx)
    _check("h0", h0, (B, H), gx.dtype, gx)
    _check("c0", c0, (B, H), gx.dtype, gx)
    return T, B, H


def check_bwd(
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
    w_hh: Tensor,
    y: Tensor,
    c_all: Tensor,
    gates: Tensor,
    h0: Tensor,
) -> tuple[int, int, int]:
    """Validates lstm_bwd's arguments (see the module docstring); returns (T, B, H)."""
    if y.dim() != 3:
        raise ValueError(f"charrnn_fast: y must have shape [T, B, H], got {list(y.shape)}")
    T, B, H = y.shape
    dt = y.dtype
    _check("y", y, (T, B, H), dt, y)
    _check("dy", dy, (T, B, H), dt, y)
    _check("dhT", dhT, (B, H), dt, y)
    _check("dcT", dcT, (B, H), dt, y)
    _check("w_hh", w_hh, (4 * H, H), dt, y)
    _check("c_all", c_all, (T + 1, B, H), acc_dtype(dt), y)
    if T * B > 0 and gates.numel() == 0:
        raise ValueError(
            "charrnn_fast: gates is empty: lstm_fwd was called with training=False, "
            "so there is nothing to differentiate"
        )
    if T * B > 0:
        _check("gates", gates, (T, B, 4 * H), dt, y)
    _check("h0", h0, (B, H), dt, y)
    return T, B, H
