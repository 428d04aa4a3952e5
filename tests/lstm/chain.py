"""Shared helpers: run an LSTM forward and backward, and compare with calibrated tolerances.

The tolerance calibrates itself (docs/DESIGN.md, "Chain of trust", link 3): a backend in dtype d may be off
the float64 truth by at most twice what plain PyTorch (nn.LSTM) in dtype d is
off, plus a small floor.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

# The floor, relative to the largest magnitude of a quantity: for fp64 the
# 1e-10 of docs/DESIGN.md (link 1); for the others one rounding of the result to the dtype
# (its unit roundoff), which no implementation that returns that dtype can
# avoid (for fp32 a few ulps, since sums of T*B terms are reordered).
FLOOR = {torch.float64: 1e-10, torch.float32: 2e-6, torch.bfloat16: 2**-8, torch.float16: 2**-11}


def make_inputs(
    m: nn.LSTM, T: int, B: int, seed: int = 0, batched: bool = True
) -> dict[str, Tensor]:
    """float64 CPU inputs for module m: x, h0, c0 and upstream grads gy, gh, gc."""
    g = torch.Generator().manual_seed(seed)
    D = 2 if m.bidirectional else 1
    L = m.num_layers * D
    xs = (B, T, m.input_size) if m.batch_first else (T, B, m.input_size)
    ys = (B, T, D * m.hidden_size) if m.batch_first else (T, B, D * m.hidden_size)
    hs = (L, B, m.hidden_size)
    if not batched:
        xs = (T, m.input_size)
        ys = (T, D * m.hidden_size)
        hs = (L, m.hidden_size)

    def r(*s: int) -> Tensor:
        return torch.randn(*s, generator=g, dtype=torch.float64)

    return {"x": r(*xs), "h0": r(*hs), "c0": r(*hs), "gy": r(*ys), "gh": r(*hs), "gc": r(*hs)}


def run(
    m: nn.Module,
    inputs: dict[str, Tensor],
    dtype: torch.dtype,
    device: str = "cpu",
    with_hx: bool = True,
) -> dict[str, Tensor]:
    """Forward and backward of m in dtype; every output and gradient as float64 CPU."""
    m = copy.deepcopy(m).to(device=device, dtype=dtype)
    leaves = {
        k: inputs[k].to(device=device, dtype=dtype, copy=True).requires_grad_()
        for k in ("x", "h0", "c0")
    }
    hx = (leaves["h0"], leaves["c0"]) if with_hx else None
    out, (h, c) = m(leaves["x"], hx)
    loss = (
        (out.double() * inputs["gy"].to(device)).sum()
        + (h.double() * inputs["gh"].to(device)).sum()
        + (c.double() * inputs["gc"].to(device)).sum()
    )
    loss.backward()
    res = {"out": out, "h_n": h, "c_n": c, "dx": leaves["x"].grad}
    if with_hx:
        res.update(dh0=leaves["h0"].grad, dc0=leaves["c0"].grad)
    for name, p in m.named_parameters():
        res["d" + name] = p.grad
    return {k: v.detach().double().cpu() for k, v in res.items()}


def assert_close_calibrated(
    got: dict[str, Tensor],
    plain: dict[str, Tensor],
    truth: dict[str, Tensor],
    dtype: torch.dtype,
    label: str = "",
) -> None:
    """Each quantity of got within 2 x |plain - truth| + floor of truth; diffs printed first."""
    assert got.keys() == truth.keys(), (sorted(got), sorted(truth))
    failures = []
    for k in truth:
        err = (got[k] - truth[k]).abs()
        base = (plain[k] - truth[k]).abs().max().item()
        tol = 2 * base + FLOOR[dtype] * max(1.0, truth[k].abs().max().item())
        mx = err.max().item() if err.numel() else 0.0
        mean = err.mean().item() if err.numel() else 0.0
        print(f"{label} {k:18s} max {mx:.3e} mean {mean:.3e} plain {base:.3e} tol {tol:.3e}")
        if not mx <= tol:  # also catches NaN
            failures.append(f"{k}: max error {mx:.3e} > tol {tol:.3e}")
    assert not failures, f"{label}: " + "; ".join(failures)
