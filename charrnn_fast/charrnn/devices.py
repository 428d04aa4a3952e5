"""The device and LSTM backend a command runs on, checked before any work starts,
so that a typo or a missing GPU is one clear line, not a traceback mid-run."""

from __future__ import annotations

import torch

from charrnn_fast import backends
from charrnn_fast.charrnn.errors import UserError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """torch.device for a --device value (auto: the GPU when there is one)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device {name!r} is not a device: expected {DEVICE_HELP}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: not supported here, expected {DEVICE_HELP}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} requested but no CUDA GPU is available")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"--device {name}: this machine has {n} GPU(s), cuda:0..cuda:{n - 1}")
    return dev


def check_backend(
    name: str | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    hidden: int = 8,
    steps: int = 1,
    rows: int = 1,
) -> None:
    """UserError when LSTM backend `name` (None: automatic) cannot run a layer of
    `hidden` units over [steps, rows] inputs of `dtype` on `device`."""
    option = f"--backend {name}"
    if name is None:  # automatic, unless the environment names one
        name = backends.requested(None)
        if name is None:
            return
        option = f"{backends.ENV_VAR}={name}"
    try:
        backend = backends.get(name)
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None
    gx = torch.empty((steps, rows, 4 * hidden), device=device, dtype=dtype)
    w_hh = torch.empty((4 * hidden, hidden), device=device, dtype=dtype)
    reason = backend.why_not(gx, w_hh)
    if reason is not None:
        raise UserError(f"{option} cannot run on {device}: {reason}")
