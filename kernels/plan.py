"""Which Triton LSTM kernel serves a shape, with which tile sizes: the Triton
planner (docs/DESIGN.md, "Planners").

Plain Python (no @triton.jit here, no import of the backend registry), so the
backend's why_not and backends.report() can ask for a plan without importing
the kernels. The device enters as its limits (charrnn_fast.backends.plans.
DeviceLimits: `sms`, `smem_optin`), the forced path as an argument: reading
CHARRNN_FAST_PATH is the backend's job (plans.forced_path).

Paths:
  small       lstm_small.py: one program per batch tile, all of W_hh per program.
              Needs 4 * Hp^2 elements (Hp = padded H) on one SM.
  persistent  lstm_persistent.py, one launch: hidden units split over at most
              SM-count programs, each holding its W_hh slice (or streaming it
              from L2 when even the slice is too big), one barrier per step.
  stepwise    lstm_stepwise.py: the same split-H kernels relaunched per step,
              any size, any grid.

"On chip" means shared memory: compiled for sm_90 (bench/triton_compile_check.py),
the W_hh tiles loaded before the time loop become loop-invariant shared-memory
buffers (ttg.local_alloc hoisted out of the loop) read by the MMAs every step,
so the budget is the device's shared memory per block (after opt-in), of which
W_hh may take _W_SHARE; the h tile and layout conversions need the rest.

The thresholds between paths, the tile sizes and the warp counts are guesses
until bench/run.py has measured them on a GPU (docs/performance.md): the three paths
all serve every size they accept, so the choice only moves speed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

PATHS = ("small", "persistent", "stepwise")

# Fraction of the per-block shared memory that W_hh may take: the rest is for
# the compiler's operand staging and layout conversions.
_W_SHARE = 0.75
# The small path keeps 4 [Hp, Hp] tiles live for the whole loop: beyond this the
# compile time and register spills explode whatever the shared memory says.
_SMALL_MAX_HP = 128
# h row tile [BLOCK_B, Hp] of a resident persistent program: keep it this small.
_H_TILE_BYTES = 64 * 1024
# Shared memory of a resident persistent program beyond its W slice and h tile.
_SMEM_SLACK = 8 * 1024
# The four fp32 gate accumulators [BLOCK_B, BLOCK_J] stay in registers.
_MAX_ACC = 64 * 64
# grid_barrier's int32 counter reaches n_j * T after T steps (lstm_common.py).
COUNTER_LIMIT = 2**31


class Limits(Protocol):
    """What the planner reads of a device (plans.DeviceLimits satisfies it)."""

    sms: int  # programs that can be resident at once (one per SM)
    smem_optin: int  # shared memory per program, bytes
    # Per SM, for the occupancy check of a compiled persistent kernel (co_resident):
    regs_per_sm: int  # 32-bit registers
    threads_per_sm: int
    smem_per_sm: int  # shared memory, bytes


@dataclass(frozen=True)
class TritonPlan:
    path: str  # "small" | "persistent" | "stepwise"
    block_b: int  # batch rows per program
    block_j: int  # hidden units per program (the padded H on the small path)
    block_k: int  # contraction chunk (the padded H when W is resident)
    w_resident: bool  # W_hh (slice) loaded once before the time loop
    grid: tuple[int, int]  # (hidden-unit blocks, batch tiles)
    num_warps: int
    why: str = ""  # why this path (or why not a faster one)

    @property
    def geometry(self) -> str:
        w = "W resident" if self.w_resident else f"W streamed in {self.block_k}-row chunks"
        return (
            f"block_b={self.block_b} block_j={self.block_j} grid={self.grid[0]}x{self.grid[1]} "
            f"warps={self.num_warps}, {w}"
        )


@dataclass(frozen=True)
class Launch:
    """What a kernel wrapper (forward / backward of lstm_small, lstm_persistent,
    lstm_stepwise) takes besides the tensors: the plan's tiles and warps, tl.dot's
    precision for fp32 operands (triton_runtime.fp32_precision), and the limits
    of the device on which a persistent grid must be co-resident."""

    plan: TritonPlan
    prec: str  # "ieee" | "tf32x3" | "tf32"
    limits: Limits


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def padded_h(H: int) -> int:
    """tl.dot needs every dimension >= 16 and power-of-two tiles."""
    return max(16, _pow2(H))


def elem_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def small(B: int, H: int, es: int, lim: Limits) -> TritonPlan | None:
    """The small-H plan, or None when 4 Hp^2 elements of W_hh do not fit a program."""
    hp = padded_h(H)
    budget = int(lim.smem_optin * _W_SHARE)
    if hp > _SMALL_MAX_HP or 4 * hp * hp * es > budget:
        return None
    # Enough batch tiles to fill the SMs, but no smaller than 16 (tl.dot M).
    bb = 16
    while bb < 64 and _cdiv(B, bb) > lim.sms:
        bb *= 2
    why = f"all of W_hh (4 x {hp}^2 x {es} B) fits {_W_SHARE:.0%} of a program's shared memory"
    return TritonPlan("small", bb, hp, hp, True, (1, _cdiv(B, bb)), 4 if hp <= 32 else 8, why)


def persistent(
    B: int, H: int, es: int, lim: Limits, allow_resident: bool = True
) -> TritonPlan | None:
    """The persistent plan (grid within the SM count), or None when no batch
    tiling keeps the grid that small."""
    hp = padded_h(H)
    best, best_key = None, None
    for bb in (16, 32, 64, 128):
        if bb > 16 and bb // 2 >= B:
            break  # a bigger batch tile only adds padding
        bj = 16
        while bj <= hp and bb * bj <= _MAX_ACC:
            grid = (_cdiv(H, bj), _cdiv(B, bb))
            if grid[0] * grid[1] <= lim.sms:
                resident = allow_resident and _resident_fits(bb, bj, hp, es, lim.smem_optin)
                # Resident: W is read from shared memory each step; prefer the
                # most programs (least work per step on the critical path).
                # Streaming: every batch tile re-reads the whole W_hh from L2
                # each step; prefer fewer batch tiles, then the most programs.
                P = grid[0] * grid[1]
                key = (1, P, -bb) if resident else (0, -grid[1], P)
                if best_key is None or key > best_key:
                    bk = hp if resident else min(hp, 64)
                    big = (resident and bb * hp * es > 16 * 1024) or bb * bj >= 1024
                    why = f"{P} co-resident programs (<= {lim.sms} SMs), each " + (
                        "holding its W_hh slice" if resident else "streaming W_hh from L2"
                    )
                    best = TritonPlan(
                        "persistent", bb, bj, bk, resident, grid, 8 if big else 4, why
                    )
                    best_key = key
            bj *= 2
    return best


def _resident_fits(bb: int, bj: int, hp: int, es: int, smem: int) -> bool:
    # Measured with compile_check (sm_90): shared memory = the W slice + the
    # [BLOCK_B, Hp] h (or dgates) staging tile + a few KB. The h tile also
    # lives in registers as an MMA operand, hence its own cap.
    h_tile = bb * hp * es
    return h_tile <= _H_TILE_BYTES and 4 * hp * bj * es + h_tile + _SMEM_SLACK <= smem


# CUDA's occupancy rules on sm_80 / sm_90: registers are allocated per warp in
# units of 256, the driver reserves 1 KiB of shared memory per block, and an SM
# holds at most 32 blocks.
_REG_UNIT = 256
_SMEM_RESERVED = 1024
_MAX_BLOCKS_PER_SM = 32


def co_resident(n_regs: int, shared: int, num_warps: int, lim: Limits) -> int:
    """Programs of a compiled kernel (n_regs registers per thread, `shared`
    bytes of shared memory, num_warps warps) that one SM holds at once; 0 when
    not even one fits. An estimate of cudaOccupancyMaxActiveBlocksPerMultiprocessor
    from the same rules (allocation granularity included); the cooperative
    launch is the exact check."""
    threads = 32 * num_warps
    fits = [_MAX_BLOCKS_PER_SM, lim.threads_per_sm // threads]
    if n_regs > 0:
        per_warp = _cdiv(n_regs * 32, _REG_UNIT) * _REG_UNIT
        fits.append(lim.regs_per_sm // (per_warp * num_warps))
    fits.append(lim.smem_per_sm // (shared + _SMEM_RESERVED))
    return max(0, min(fits))


def stepwise(B: int, H: int, why: str = "") -> TritonPlan:
    """The per-step relaunch plan: serves any size."""
    hp = padded_h(H)
    bb = 16 if B <= 16 else 32
    bj = min(hp, 32)
    grid = (_cdiv(H, bj), _cdiv(B, bb))
    # 4 warps spill registers at 32 x 32 tiles (ptxas, sm_90): use 8 there.
    warps = 8 if bb * bj >= 1024 else 4
    return TritonPlan("stepwise", bb, bj, min(hp, 64), False, grid, warps, why)


def make_plan(
    B: int,
    H: int,
    dtype: torch.dtype,
    lim: Limits,
    path: str | None = None,
    block_b: int | None = None,
    block_j: int | None = None,
    resident: bool | None = None,
    T: int = 1,
) -> TritonPlan:
    """The plan for batch B, hidden size H, T steps on a device with limits `lim`.

    `path` forces a path (ValueError with the reason when it cannot serve the
    shape); block_b / block_j override the tiles, resident=False forbids holding
    W_hh on chip (tests, benchmarks, and the fallback when the compiler says a
    resident kernel does not fit). T only bounds the persistent barrier counter.
    """
    if path is not None and path not in PATHS:
        raise ValueError(f"triton path must be one of {PATHS}, got {path!r}")
    es = elem_bytes(dtype)
    if path == "small":
        p = small(B, H, es, lim)
        if p is None:
            raise ValueError(
                f"the small-H Triton path holds 4*Hp^2 = {4 * padded_h(H) ** 2} elements of "
                f"W_hh per program (Hp = {padded_h(H)}): more than this device's budget "
                f"({int(lim.smem_optin * _W_SHARE)} bytes, Hp <= {_SMALL_MAX_HP})"
            )
        p = replace(p, why="forced; " + p.why)
    elif path == "persistent":
        p = persistent(B, H, es, lim, resident is not False)
        if p is None:
            raise ValueError(
                f"batch {B} needs more than {lim.sms} programs even with 128-row tiles: "
                "too many for one persistent grid (use the stepwise path)"
            )
        p = replace(p, why="forced; " + p.why)
    elif path == "stepwise":
        p = stepwise(B, H, "forced")
    else:
        p = None if resident is False else small(B, H, es, lim)
        if p is None:
            p = persistent(B, H, es, lim, resident is not False)
            if p is not None:
                hp = padded_h(H)
                p = replace(p, why=f"W_hh (Hp = {hp}) too big for one program; " + p.why)
        if p is None:
            p = stepwise(B, H, f"no persistent grid of <= {lim.sms} programs fits B={B}")
    if block_b is not None or block_j is not None or resident is not None:
        p = _override(p, B, H, block_b, block_j, resident, lim, es)
    if p.path == "persistent" and p.grid[0] * T >= COUNTER_LIMIT:
        why = (
            f"the barrier counter would reach {p.grid[0]} x T = {p.grid[0] * T} >= 2^31 "
            "(int32): too many steps for one persistent launch"
        )
        if path == "persistent":
            raise ValueError(why)
        p = stepwise(B, H, why)
    return p


def _override(
    p: TritonPlan,
    B: int,
    H: int,
    bb: int | None,
    bj: int | None,
    resident: bool | None,
    lim: Limits,
    es: int,
) -> TritonPlan:
    hp = padded_h(H)
    bb = bb or p.block_b
    bj = hp if p.path == "small" else (bj or p.block_j)
    for name, v in (("block_b", bb), ("block_j", bj)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {v}")
    grid = (_cdiv(H, bj), _cdiv(B, bb))
    if p.path == "persistent" and grid[0] * grid[1] > lim.sms:
        raise ValueError(f"a persistent grid of {grid} programs exceeds the {lim.sms} SMs")
    if p.path == "small":
        if resident is False:
            raise ValueError("the small-H path always holds W_hh on chip (resident=False)")
        res = True
    elif p.path == "persistent":
        res = _resident_fits(bb, bj, hp, es, lim.smem_optin) if resident is None else resident
    else:
        res = False  # stepwise relaunches: nothing stays resident anyway
    bk = hp if res else min(hp, 64)
    return TritonPlan(p.path, bb, bj, bk, res, grid, p.num_warps, p.why + "; tiles overridden")
