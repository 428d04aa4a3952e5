"""Backend registry: which implementation of the recurrence serves a call.

Every backend implements the op contract (charrnn_fast/contract.py, `fwd` and
`bwd`), owns the input projection of its layers (`project`), and says, for a
given call, why it cannot serve it (`why_not`, None when it can). The rules
are in docs/DESIGN.md, "Backends".

- `backend=` names one explicitly: if it cannot serve the call, that is an error
  that gives the reason.
- No name (and no CHARRNN_FAST_BACKEND): the first usable backend in the
  device's preference order; when it is not the first choice, the fallback is
  announced once.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from charrnn_fast.backends.base import Backend

__all__ = ["Backend", "get", "names", "register", "report", "requested", "select"]


_REGISTRY: dict[str, Backend] = {}

# Preference order per device type. On CUDA the order between the fused
# backends is provisional until bench/run.py measures it on a GPU
# (docs/performance.md).
_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
_announced: set[tuple[str, str]] = set()


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def names() -> list[str]:
    """Names of the registered backends."""
    return list(_REGISTRY)


def get(name: str) -> Backend:
    """The backend called `name`; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(_REGISTRY)}") from None


ENV_VAR = "CHARRNN_FAST_BACKEND"


def requested(backend: str | None) -> str | None:
    """The explicit choice: the `backend=` argument, else CHARRNN_FAST_BACKEND."""
    if backend is None:
        backend = os.environ.get(ENV_VAR) or None
    return backend


def select(gx: Tensor, w_hh: Tensor, backend: str | None = None) -> Backend:
    """The backend for a layer call on gx[T,B,*] (the layer input or its
    projection) and w_hh[4H,H]."""
    name = requested(backend)
    if name is not None:
        # Name the environment variable when the choice came from it: the user
        # may have set it long ago, far from the code that fails.
        origin = f" (from {ENV_VAR})" if backend is None else ""
        if name not in _REGISTRY:
            raise ValueError(
                f"unknown backend {name!r}{origin}: expected one of {sorted(_REGISTRY)}"
            )
        chosen = _REGISTRY[name]
        reason = chosen.why_not(gx, w_hh)
        if reason is not None:
            raise RuntimeError(f"backend {name!r}{origin} cannot run this call: {reason}")
        return chosen
    order = _ORDER.get(gx.device.type, ("reference",))
    skipped = []
    for candidate in order:
        b = _REGISTRY[candidate]
        reason = b.why_not(gx, w_hh)
        if reason is None:
            key = (gx.device.type, candidate)
            if skipped and key not in _announced:
                _announced.add(key)
                warnings.warn(
                    f"charrnn_fast: using backend {candidate!r} on {gx.device.type}; "
                    + "; ".join(skipped),
                    stacklevel=3,
                )
            return b
        skipped.append(f"{candidate!r} unavailable: {reason}")
    raise RuntimeError("no charrnn_fast backend can run this call: " + "; ".join(skipped))


def report(
    shape: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    limits: object | None = None,
) -> str:
    """Print and return one line per backend: usable or not on CPU / CUDA
    (float32), and why; then the CPU dispatch's mode and each decision it made
    in this process (ATen's LSTM or ours, and the measured ratio). With shape=(B, H) instead: the plan each backend would
    follow for a call of batch B, hidden size H in `dtype`, per direction
    (path, geometry, why; docs/DESIGN.md, "Planners"), on `device` (default:
    the current GPU, else the Triton interpreter) or, given `limits` (a
    plans.DeviceLimits such as plans.H100), on such a device as planned
    without it."""
    if shape is not None:
        text = "\n".join(_plan_lines(shape, dtype, device, limits))
        print(text)
        return text
    probes = [("cpu", torch.device("cpu"))]
    if torch.cuda.is_available():
        probes.append(("cuda", torch.device("cuda")))
    lines = []
    for b in _REGISTRY.values():
        verdicts = []
        for label, dev in probes:
            gx = torch.empty((1, 1, 4 * 8), device=dev)
            w = torch.empty((4 * 8, 8), device=dev)
            try:
                reason = b.why_not(gx, w)
            except ValueError as e:  # a malformed CHARRNN_FAST_PATH, say
                reason = str(e)
            verdicts.append(f"{label}: " + ("usable" if reason is None else f"no ({reason})"))
        if not torch.cuda.is_available():
            verdicts.append("cuda: no (torch.cuda.is_available() is False)")
        lines.append(f"{b.name:10s} {b.description}\n{'':10s} " + "; ".join(verdicts))
    from charrnn_fast.backends import dispatch

    lines += dispatch.report_lines()
    text = "\n".join(lines)
    print(text)
    return text


def _plan_lines(
    shape: tuple[int, int], dtype: torch.dtype, device: torch.device | str | None, limits
) -> list[str]:
    from charrnn_fast.backends import plans

    B, H = shape
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if limits is None:
        limits = plans.device_limits(device)
    lines = [f"plans for B={B} H={H} {dtype} on {limits}:"]
    for b in _REGISTRY.values():
        if b.plan is None:
            lines.append(f"  {b.name} fwd/bwd: its one path (no planner)")
            continue
        try:
            lines += [f"  {p}" for p in b.plan(B, H, dtype, device, limits)]
        except (RuntimeError, ValueError) as e:
            lines.append(f"  {b.name}: no plan ({e})")
    return lines


def _load() -> None:
    from charrnn_fast.backends import cpu, cuda, reference

    register(
        Backend(
            "reference",
            reference.lstm_fwd,
            reference.lstm_bwd,
            lambda gx, w_hh: None,
            "plain PyTorch loop: any device, any float dtype (the test oracle)",
        )
    )
    register(cpu.BACKEND)
    register(cuda.BACKEND)
    try:
        from charrnn_fast.backends import triton as triton_backend
    except ImportError:
        # The triton backend module is optional: without it the registry
        # simply has no `triton` entry.
        return
    register(triton_backend.BACKEND)


_load()
