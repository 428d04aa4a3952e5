"""One shape for the GPU planners (docs/DESIGN.md, "Planners").

Both GPU backends answer the same question per call: which kernel path runs a
recurrence of batch B and hidden size H in a dtype on a device, with which
geometry, and why. The answer is a `Plan(backend, direction, path, geometry,
why)`, computed from (B, H, dtype, DeviceLimits, forced path):

- the CUDA planner is C++ (csrc/cuda/plan.cpp, it shares the shared-memory
  layout with the kernels) and reaches Python through
  torch.ops.charrnn_fast.cuda_plan_for (charrnn_fast/backends/cuda.py);
- the Triton planner is kernels/plan.py (plain Python, no triton import).

This module holds what the two share and nothing that imports triton:

- `DeviceLimits` and `device_limits(device)`: the device figures both planners
  read (the C++ launch path reads the same cudaDeviceProp fields);
- the one environment grammar that forces a path (`forced_path`);
- the one fallback policy and its cache (`FallbackCache`);
- `Plan`, the (path, geometry, why) answer that `backends.report()` prints.

Forcing a path: CHARRNN_FAST_PATH is a comma list of `backend:path` entries,
where path is one name for both directions or `fwd/bwd`:

    CHARRNN_FAST_PATH=cuda:persistent                 both directions
    CHARRNN_FAST_PATH=cuda:persistent/stepwise        forward / backward
    CHARRNN_FAST_PATH=cuda:stepwise,triton:small      one entry per backend

Paths: cuda `auto | persistent | stepwise`, triton `auto | small | persistent |
stepwise`. The variable is read at every call. A forced path that cannot run a
call is an error that gives the reason; `auto` (or no entry) lets the planner
choose. The former variables CHARRNN_FAST_CUDA_PATH and CHARRNN_FAST_TRITON_PATH
are no longer read: either one set is an error that gives the CHARRNN_FAST_PATH
form of its value, so that a setting never stops working silently.

Fallback policy (both backends): a planned path that the device refuses at run
time for lack of resources (Triton: the compiler's OutOfResources; CUDA: a
cooperative launch the device cannot co-schedule) is replaced by the next path
down that backend's ladder, with a warning; a forced path never degrades, it
raises. Triton remembers the replacement per (backend, direction, device,
dtype, B, H) in FALLBACKS below, so later calls go straight to it. The CUDA
side needs no Python on a launch: it caches its plans in C++
(csrc/cuda/choose.cpp, persistent_plan) and falls back per call (launched()).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass

import torch

PATH_ENV = "CHARRNN_FAST_PATH"
# The former per-backend variables: set, they are an error naming PATH_ENV.
REMOVED_ENV = {"cuda": "CHARRNN_FAST_CUDA_PATH", "triton": "CHARRNN_FAST_TRITON_PATH"}
# The paths each backend can be forced to ("auto" means: the planner chooses).
PATHS: dict[str, tuple[str, ...]] = {
    "cuda": ("persistent", "stepwise"),
    "triton": ("small", "persistent", "stepwise"),
}
DIRECTIONS = ("fwd", "bwd")

# The Triton interpreter runs programs one after another, so a persistent grid
# there is one program ("one SM") and its barrier never waits.
_INTERPRETER_SMS = 1


@dataclass(frozen=True)
class DeviceLimits:
    """The device figures the planners read. Sizes in bytes."""

    name: str
    sms: int  # streaming multiprocessors: cudaDeviceProp::multiProcessorCount
    smem_optin: int  # shared memory per block after opt-in: sharedMemPerBlockOptin
    l2_bytes: int  # L2 cache size: l2CacheSize
    # Per SM (the occupancy check of the Triton persistent kernels); H100 figures
    # by default: regsPerMultiprocessor, maxThreadsPerMultiProcessor,
    # sharedMemPerMultiprocessor.
    regs_per_sm: int = 65536
    threads_per_sm: int = 2048
    smem_per_sm: int = 233472

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.sms} SMs, {self.smem_optin // 1024} KiB shared memory "
            f"per block, {self.l2_bytes // 2**20} MiB L2"
        )


# Nominal figures of an H100 SXM / H200 (both 132 SMs, 227 KiB opt-in, 50 MiB
# L2), for plans computed on a machine without that GPU (report(), tests).
H100 = DeviceLimits("H100/H200 (nominal)", 132, 232448, 50 * 2**20)
# Under TRITON_INTERPRET=1: an H100's shared memory, one program at a time.
INTERPRETER = DeviceLimits(
    "Triton interpreter (nominal H100 shared memory)", _INTERPRETER_SMS, 227 * 1024, H100.l2_bytes
)


@functools.cache
def _cuda_limits(index: int) -> DeviceLimits:
    p = torch.cuda.get_device_properties(index)
    smem = getattr(p, "shared_memory_per_block_optin", 0) or 48 * 1024
    l2 = getattr(p, "L2_cache_size", 0) or 0
    per_sm = {
        field: int(getattr(p, attr, 0) or getattr(H100, field))
        for field, attr in (
            ("regs_per_sm", "regs_per_multiprocessor"),
            ("threads_per_sm", "max_threads_per_multi_processor"),
            ("smem_per_sm", "shared_memory_per_multiprocessor"),
        )
    }
    return DeviceLimits(p.name, int(p.multi_processor_count), int(smem), int(l2), **per_sm)


def device_limits(device: torch.device | str | int | None = None) -> DeviceLimits:
    """The limits of `device` (default: the current CUDA device). A CPU device
    stands for the Triton interpreter (`INTERPRETER`)."""
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device())
    dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if dev.type != "cuda":
        return INTERPRETER
    return _cuda_limits(dev.index if dev.index is not None else torch.cuda.current_device())


@dataclass(frozen=True)
class Plan:
    """What runs one direction of a call, on which geometry, and why."""

    backend: str  # "cuda" | "triton" | ...
    direction: str  # "fwd" | "bwd"
    path: str  # "persistent" | "stepwise" | "small" | ...
    geometry: str  # the tiles and grid, in the planner's own terms ("" when none)
    why: str  # the reason for this path (or for not taking a better one)

    def __str__(self) -> str:
        geom = f" [{self.geometry}]" if self.geometry else ""
        return f"{self.backend} {self.direction}: {self.path}{geom}: {self.why}"


# ------------------------------------------------------------- forcing a path
@dataclass(frozen=True)
class Forced:
    """The path forced per direction for one backend (None: the planner chooses)."""

    fwd: str | None = None
    bwd: str | None = None
    source: str = ""  # the setting it came from, for messages: "CHARRNN_FAST_PATH=cuda:small"

    def get(self, direction: str) -> str | None:
        return self.fwd if direction == "fwd" else self.bwd


def _path_pair(backend: str, spec: str) -> tuple[str | None, str | None]:
    """`path` or `fwd/bwd` -> (fwd, bwd), None for auto."""
    parts = spec.split("/")
    allowed = ("auto", *PATHS[backend])
    if len(parts) > 2 or not all(p in allowed for p in parts):
        raise ValueError(
            f"{PATH_ENV}: the {backend} path must be one of {', '.join(allowed)}, or "
            f"<fwd>/<bwd> such as persistent/stepwise; got {spec!r}"
        )
    fwd, bwd = parts if len(parts) == 2 else (parts[0], parts[0])
    return (None if fwd == "auto" else fwd), (None if bwd == "auto" else bwd)


def parse_path_env(text: str) -> dict[str, tuple[str | None, str | None]]:
    """CHARRNN_FAST_PATH's value -> {backend: (fwd path, bwd path)}; ValueError
    naming the variable and the expected form when it is malformed."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        backend, colon, spec = entry.partition(":")
        backend = backend.strip()
        if not colon or backend not in PATHS:
            raise ValueError(
                f"{PATH_ENV} must be a comma list of <backend>:<path> with backend one of "
                f"{', '.join(PATHS)} (e.g. cuda:persistent/stepwise,triton:small); got {text!r}"
            )
        if backend in out:
            raise ValueError(f"{PATH_ENV} names {backend} twice: {text!r}")
        out[backend] = _path_pair(backend, spec.strip())
    return out


def check_path_env() -> dict[str, tuple[str | None, str | None]]:
    """The environment's forced paths, checked: CHARRNN_FAST_PATH parsed (see
    `parse_path_env`), and a ValueError for a former variable that is set,
    giving the CHARRNN_FAST_PATH form of its value."""
    for backend, name in REMOVED_ENV.items():
        if name in os.environ:
            value = os.environ[name].strip()
            # The former grammars: cuda `<fwd>,<bwd>`, triton one path for both.
            new = f"{backend}:{value.replace(',', '/') or 'auto'}"
            raise ValueError(
                f"{name} is no longer read; set {PATH_ENV}={new} instead "
                f"(found {name}={os.environ[name]!r})"
            )
    return parse_path_env(os.environ.get(PATH_ENV, ""))


def forced_path(backend: str) -> Forced:
    """The path forced for `backend` by the environment (read now, at every call)."""
    if backend not in PATHS:
        raise ValueError(f"no forced paths for backend {backend!r}: expected one of {list(PATHS)}")
    entries = check_path_env()
    if backend not in entries:
        return Forced()
    fwd, bwd = entries[backend]
    return Forced(fwd, bwd, f"{PATH_ENV}={os.environ.get(PATH_ENV, '')}")


# ------------------------------------------------------------ fallback cache
class FallbackCache:
    """Plans that replaced a refused one, per (backend, direction, device, dtype,
    B, H): the fallback policy's memory (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, Hashable] = {}

    def get(self, key: tuple) -> Hashable | None:
        with self._lock:
            return self._entries.get(key)

    def remember(self, key: tuple, replacement: Hashable) -> None:
        with self._lock:
            self._entries[key] = replacement

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def items(self) -> list[tuple[tuple, Hashable]]:
        with self._lock:
            return list(self._entries.items())


FALLBACKS = FallbackCache()


def fallback_key(
    backend: str, direction: str, device: torch.device, dtype: torch.dtype, B: int, H: int
) -> tuple:
    """The key under which FALLBACKS remembers a degraded plan."""
    return (backend, direction, str(device), dtype, B, H)
