"""What a backend is: the op contract's two functions, its input projection, why
it cannot serve a call, and its optional planner and projected op. Backends
import this module, never the registry (backends/__init__.py) that lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Backend:
    name: str
    fwd: Callable[..., tuple[Tensor, Tensor, Tensor]]
    bwd: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]
    # (x[T,B,*], w_hh[4H,H]) -> reason it cannot serve this call, or None. x is
    # the layer input or its projection gx[T,B,4H]: only its device, dtype and
    # first two sizes (T, B) are read.
    why_not: Callable[[Tensor, Tensor], str | None]
    description: str
    # (x[T,B,I], w_ih[4H,I], b[4H] or None) -> gx[T,B,4H]: the input projection
    # of all steps, differentiable by autograd.
    project: Callable[[Tensor, Tensor, Tensor | None], Tensor] = F.linear
    # (B, H, dtype, device, plans.DeviceLimits) -> [forward plan, backward plan]:
    # the kernel path a call would get and why (docs/DESIGN.md, "Planners").
    # None for backends with a single path.
    plan: Callable[..., list] | None = None
    # The recurrence with a projection (nn.LSTM's proj_size > 0), or None where
    # the backend has none (recurrence.py then runs reference.projected):
    # (gx, w_hh[4H,P], w_hr[P,H], h0[B,P], c0[B,H], training) -> y, c_all, gates, r
    # and (dy, dhT, dcT, w_hh, w_hr, y, c_all, gates, r, h0) -> dgx, dw_hh, dw_hr, dh0, dc0.
    proj_fwd: Callable[..., tuple[Tensor, ...]] | None = None
    proj_bwd: Callable[..., tuple[Tensor, ...]] | None = None
