"""Large-H LSTM recurrence: the hidden units split across a persistent grid (the
persistent path of the triton backend; docs/DESIGN.md, "Backends", "Planners").

Algorithm: the same step as lstm_small.py (see its header), with the work of one
step split by hidden unit. Program (pj, pb) owns hidden units
J = [pj*BLOCK_J, (pj+1)*BLOCK_J) of batch rows [pb*BLOCK_B, (pb+1)*BLOCK_B):
  forward  step t: read the whole row h_{t-1} = y[t-1] (h0 at t=0) from global
           memory, pre_q[:, J] = gx[t, :, q*H + J] + h_{t-1} @ W_hh[q*H + J, :]^T for
           q = i, f, g, o, update its own c[:, J] (kept in registers) and write
           y[t, :, J]; then a barrier among the programs of its batch tile.
  backward step t (reverse): from its own dh[:, J], dc[:, J] write
           dgx[t, :, q*H + J]; barrier; then dh[:, J] = sum_q dgx[t, :, q*H:(q+1)*H]
           @ W_hh[q*H:(q+1)*H, J] reads the whole dgx[t] row back (rounded to the
           input dtype, as stored).
Only the exchanged rows (h_t forward, dgx[t] backward) go through global memory
(L2); cell state and gradient carries stay in registers.

On chip: with W_RESIDENT, each program loads its slice of W_hh once before the
loop (all four gates of its hidden units: 4 x [H, BLOCK_J] elements) and reuses it
every step; compiled for sm_90 the slice becomes a loop-invariant shared-memory
buffer (see bench/triton_compile_check.py). Without it (slices too big for one SM),
the slice is streamed from L2 each step in [BLOCK_K, BLOCK_J] chunks.

Synchronisation: PERSISTENT=True runs all n_steps in one launch (forward() and
backward() below); the programs of one batch tile meet once per step at
grid_barrier (lstm_common.py), a monotonically increasing atomic counter per
batch tile, the counters COUNTER_STRIDE int32 words (128 bytes) apart. The
barrier waits for other programs, so they must all be resident at once: the
planner keeps the grid within the SM count, and _launch checks the compiled
kernel's occupancy (registers, shared memory, warps: kernels/plan.py,
co_resident) and launches cooperatively, so that a device that cannot hold the
whole grid (MPS, green contexts, a concurrent kernel such as NCCL's) refuses
the launch instead of hanging in it. Either refusal is triton's
OutOfResources, on which the backend falls back to the next path down
(docs/DESIGN.md, "Planners").
PERSISTENT=False is the stepwise path (lstm_stepwise.py): the same kernels
launched once per step (forward) or twice per step (backward: the
pointwise half DO_POINTWISE, then the dot half DO_DOT), the kernel boundary
being the barrier; the carries then live in global memory between launches.
Which of persistent / stepwise / lstm_small wins at a given size is for
bench/run.py on a GPU to decide; kernels/plan.py encodes the current guess.

Under TRITON_INTERPRET=1 programs run one after another, so a barrier that has
to wait for another program of its batch tile would deadlock: there the planner
gives the persistent path one program per batch tile (cdiv(H, BLOCK_J) = 1),
whose barrier never waits (tests/lstm/test_triton_barrier.py checks that grid,
and the barrier's protocol in a Python model of concurrent programs).

Legend: T steps, B batch, H hidden units; BLOCK_B rows and BLOCK_J hidden units
per program; BLOCK_K contraction chunk (the padded H when W_RESIDENT).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from charrnn_fast.kernels import plan
from charrnn_fast.kernels.lstm_common import (
    backward_buffers,
    forward_outputs,
    grid_barrier,
    mm,
    tanh,
    to_dtype,
)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Barrier counters, one per batch tile, this many int32 words (128 bytes) apart.
COUNTER_STRIDE = tl.constexpr(32)


def _cooperative_launch_supported() -> bool:
    """Whether this triton takes launch_cooperative_grid (3.3 and later do)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_cooperative_grid" in getattr(CUDAOptions, "__dataclass_fields__", {})


# Not specialised on the step arguments: the stepwise variant relaunches with
# every t, which would otherwise compile a variant for t == 1 and t % 16 == 0.
@triton.jit(do_not_specialize=["t_start", "n_steps"])
def _fwd_kernel(
    gx_ptr,  # [T, B, 4H] input dtype
    w_ptr,  # [4H, H] input dtype
    hin_ptr,  # [B, H] input dtype: h_{t_start-1} (h0, or y[t_start-1])
    c_ptr,  # [T+1, B, H] fp32; c_ptr[t_start] is read, c_ptr[t+1] written
    y_ptr,  # [T, B, H] input dtype
    gates_ptr,  # [T, B, 4H] input dtype (written if STORE_GATES)
    count_ptr,  # [cdiv(B, BLOCK_B) * COUNTER_STRIDE] int32 zeros: a barrier counter per batch tile
    t_start,
    n_steps,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_RESIDENT: tl.constexpr,
    PERSISTENT: tl.constexpr,
    STORE_GATES: tl.constexpr,
    PREC: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    pj = tl.program_id(0)
    pb = tl.program_id(1)
    n_j = tl.num_programs(0)
    rb = pb * BLOCK_B + tl.arange(0, BLOCK_B)
    rj = pj * BLOCK_J + tl.arange(0, BLOCK_J)
    rk = tl.arange(0, BLOCK_K)
    mb = rb < B
    m_bj = mb[:, None] & (rj < H)[None, :]
    if W_RESIDENT:
        # W_q^T slice as a [k, j] tile: element (k, j) = w[q*H + j, k].
        m_kj = (rk < H)[:, None] & (rj < H)[None, :]
        wt = rj[None, :] * H + rk[:, None]
        w_i = tl.load(w_ptr + wt, mask=m_kj, other=0.0)
        w_f = tl.load(w_ptr + H * H + wt, mask=m_kj, other=0.0)
        w_g = tl.load(w_ptr + 2 * H * H + wt, mask=m_kj, other=0.0)
        w_o = tl.load(w_ptr + 3 * H * H + wt, mask=m_kj, other=0.0)

    o_bj = rb[:, None] * H + rj[None, :]
    o_bg = rb[:, None] * (4 * H) + rj[None, :]
    BH = B * H
    c = tl.load(c_ptr + tl.cast(t_start, tl.int64) * BH + o_bj, mask=m_bj, other=0.0)
    h_src = hin_ptr  # row source of h_{t-1}; y[t-1] after the first step
    for s in range(n_steps):
        t = tl.cast(t_start + s, tl.int64)
        gx_t = gx_ptr + t * (4 * BH) + o_bg
        a_i = tl.load(gx_t, mask=m_bj, other=0.0).to(tl.float32)
        a_f = tl.load(gx_t + H, mask=m_bj, other=0.0).to(tl.float32)
        a_g = tl.load(gx_t + 2 * H, mask=m_bj, other=0.0).to(tl.float32)
        a_o = tl.load(gx_t + 3 * H, mask=m_bj, other=0.0).to(tl.float32)
        if W_RESIDENT:
            m_bk = mb[:, None] & (rk < H)[None, :]
            # volatile: written by other programs this launch; never from L1.
            h = tl.load(h_src + rb[:, None] * H + rk[None, :], mask=m_bk, other=0.0, volatile=True)
            a_i = mm(h, w_i, a_i, PREC, INTERPRET)
            a_f = mm(h, w_f, a_f, PREC, INTERPRET)
            a_g = mm(h, w_g, a_g, PREC, INTERPRET)
            a_o = mm(h, w_o, a_o, PREC, INTERPRET)
        else:
            for k0 in range(0, H, BLOCK_K):
                kk = k0 + rk
                m_bk = mb[:, None] & (kk < H)[None, :]
                m_kj = (kk < H)[:, None] & (rj < H)[None, :]
                h = tl.load(
                    h_src + rb[:, None] * H + kk[None, :], mask=m_bk, other=0.0, volatile=True
                )
                wt = rj[None, :] * H + kk[:, None]
                a_i = mm(h, tl.load(w_ptr + wt, mask=m_kj, other=0.0), a_i, PREC, INTERPRET)
                a_f = mm(h, tl.load(w_ptr + H * H + wt, mask=m_kj, other=0.0), a_f, PREC, INTERPRET)
                a_g = mm(
                    h, tl.load(w_ptr + 2 * H * H + wt, mask=m_kj, other=0.0), a_g, PREC, INTERPRET
                )
                a_o = mm(
                    h, tl.load(w_ptr + 3 * H * H + wt, mask=m_kj, other=0.0), a_o, PREC, INTERPRET
                )
        i = tl.sigmoid(a_i)
        f = tl.sigmoid(a_f)
        g = tanh(a_g)
        o = tl.sigmoid(a_o)
        c = f * c + i * g
        h_new = to_dtype(o * tanh(c), y_ptr.dtype.element_ty, INTERPRET)
        tl.store(y_ptr + t * BH + o_bj, h_new, mask=m_bj)
        tl.store(c_ptr + (t + 1) * BH + o_bj, c, mask=m_bj)
        if STORE_GATES:
            gt = gates_ptr + t * (4 * BH) + o_bg
            dt = gates_ptr.dtype.element_ty
            tl.store(gt, to_dtype(i, dt, INTERPRET), mask=m_bj)
            tl.store(gt + H, to_dtype(f, dt, INTERPRET), mask=m_bj)
            tl.store(gt + 2 * H, to_dtype(g, dt, INTERPRET), mask=m_bj)
            tl.store(gt + 3 * H, to_dtype(o, dt, INTERPRET), mask=m_bj)
        if PERSISTENT:
            grid_barrier(count_ptr + pb * COUNTER_STRIDE, n_j * (s + 1), INTERPRET)
        h_src = y_ptr + t * BH


@triton.jit(do_not_specialize=["t_hi", "n_steps"])
def _bwd_kernel(
    dy_ptr,  # [T, B, H] input dtype
    w_ptr,  # [4H, H] input dtype
    c_ptr,  # [T+1, B, H] fp32 (c_all of the forward)
    gates_ptr,  # [T, B, 4H] input dtype (activated i, f, g, o)
    dgx_ptr,  # [T, B, 4H] input dtype, out
    dh_ptr,  # [B, H] fp32 in/out: the dh carry (dhT on the first launch, dh0 at the end)
    dc_ptr,  # [B, H] fp32 in/out: the dc carry (dcT first, dc0 at the end)
    count_ptr,  # [cdiv(B, BLOCK_B) * COUNTER_STRIDE] int32 zeros: barrier counters
    t_hi,
    n_steps,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
    W_RESIDENT: tl.constexpr,
    PERSISTENT: tl.constexpr,
    DO_POINTWISE: tl.constexpr,
    DO_DOT: tl.constexpr,
    PREC: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    # Steps t = t_hi, t_hi - 1, ..., t_hi - n_steps + 1. Each step is a
    # pointwise half (dgx[t, :, J] from the carries) and a dot half (the new dh
    # carry from the whole dgx[t] row); the stepwise variant launches them
    # separately, the persistent one puts the barrier between them.
    pj = tl.program_id(0)
    pb = tl.program_id(1)
    n_j = tl.num_programs(0)
    rb = pb * BLOCK_B + tl.arange(0, BLOCK_B)
    rj = pj * BLOCK_J + tl.arange(0, BLOCK_J)
    ru = tl.arange(0, BLOCK_K)  # a gate's hidden unit: the contracted index
    mb = rb < B
    m_bj = mb[:, None] & (rj < H)[None, :]
    if DO_DOT and W_RESIDENT:
        # W_q column slice as a [u, j] tile: element (u, j) = w[q*H + u, j].
        m_uj = (ru < H)[:, None] & (rj < H)[None, :]
        wc = ru[:, None] * H + rj[None, :]
        w_i = tl.load(w_ptr + wc, mask=m_uj, other=0.0)
        w_f = tl.load(w_ptr + H * H + wc, mask=m_uj, other=0.0)
        w_g = tl.load(w_ptr + 2 * H * H + wc, mask=m_uj, other=0.0)
        w_o = tl.load(w_ptr + 3 * H * H + wc, mask=m_uj, other=0.0)

    o_bj = rb[:, None] * H + rj[None, :]
    o_bg = rb[:, None] * (4 * H) + rj[None, :]
    BH = B * H
    dt = dgx_ptr.dtype.element_ty
    dh = tl.load(dh_ptr + o_bj, mask=m_bj, other=0.0)
    dc = tl.load(dc_ptr + o_bj, mask=m_bj, other=0.0)
    for s in range(n_steps):
        t = tl.cast(t_hi - s, tl.int64)
        if DO_POINTWISE:
            gt = gates_ptr + t * (4 * BH) + o_bg
            i = tl.load(gt, mask=m_bj, other=0.0).to(tl.float32)
            f = tl.load(gt + H, mask=m_bj, other=0.0).to(tl.float32)
            g = tl.load(gt + 2 * H, mask=m_bj, other=0.0).to(tl.float32)
            o = tl.load(gt + 3 * H, mask=m_bj, other=0.0).to(tl.float32)
            c_prev = tl.load(c_ptr + t * BH + o_bj, mask=m_bj, other=0.0)
            tc = tanh(tl.load(c_ptr + (t + 1) * BH + o_bj, mask=m_bj, other=0.0))
            dh_t = tl.load(dy_ptr + t * BH + o_bj, mask=m_bj, other=0.0).to(tl.float32) + dh
            dc_t = dc + dh_t * o * (1.0 - tc * tc)
            dg_t = dgx_ptr + t * (4 * BH) + o_bg
            tl.store(dg_t, to_dtype(dc_t * g * i * (1.0 - i), dt, INTERPRET), mask=m_bj)
            tl.store(dg_t + H, to_dtype(dc_t * c_prev * f * (1.0 - f), dt, INTERPRET), mask=m_bj)
            tl.store(dg_t + 2 * H, to_dtype(dc_t * i * (1.0 - g * g), dt, INTERPRET), mask=m_bj)
            tl.store(dg_t + 3 * H, to_dtype(dh_t * tc * o * (1.0 - o), dt, INTERPRET), mask=m_bj)
            dc = dc_t * f
        if DO_DOT:
            if PERSISTENT:
                grid_barrier(count_ptr + pb * COUNTER_STRIDE, n_j * (s + 1), INTERPRET)
            row = dgx_ptr + t * (4 * BH) + rb[:, None] * (4 * H)
            dh = tl.zeros([BLOCK_B, BLOCK_J], tl.float32)
            if W_RESIDENT:
                m_bu = mb[:, None] & (ru < H)[None, :]
                r = row + ru[None, :]
                # volatile: other programs wrote these lanes in this launch.
                dh = mm(tl.load(r, mask=m_bu, other=0.0, volatile=True), w_i, dh, PREC, INTERPRET)
                dh = mm(
                    tl.load(r + H, mask=m_bu, other=0.0, volatile=True), w_f, dh, PREC, INTERPRET
                )
                dh = mm(
                    tl.load(r + 2 * H, mask=m_bu, other=0.0, volatile=True),
                    w_g,
                    dh,
                    PREC,
                    INTERPRET,
                )
                dh = mm(
                    tl.load(r + 3 * H, mask=m_bu, other=0.0, volatile=True),
                    w_o,
                    dh,
                    PREC,
                    INTERPRET,
                )
            else:
                for u0 in range(0, H, BLOCK_K):
                    uu = u0 + ru
                    m_bu = mb[:, None] & (uu < H)[None, :]
                    m_uj = (uu < H)[:, None] & (rj < H)[None, :]
                    r = row + uu[None, :]
                    wc = w_ptr + uu[:, None] * H + rj[None, :]
                    for q in tl.static_range(4):
                        d_q = tl.load(r + q * H, mask=m_bu, other=0.0, volatile=True)
                        w_q = tl.load(wc + q * H * H, mask=m_uj, other=0.0)
                        dh = mm(d_q, w_q, dh, PREC, INTERPRET)
    tl.store(dh_ptr + o_bj, dh, mask=m_bj)
    tl.store(dc_ptr + o_bj, dc, mask=m_bj)


def counters(n_tiles: int, device: torch.device) -> Tensor:
    """Zeroed barrier counters for n_tiles batch tiles, COUNTER_STRIDE words apart."""
    return torch.zeros(n_tiles * COUNTER_STRIDE.value, dtype=torch.int32, device=device)


def check_co_resident(
    n_regs: int, shared: int, num_warps: int, grid: tuple[int, int], limits: plan.Limits
) -> None:
    """OutOfResources unless the whole grid fits the device at once, given the
    compiled kernel's registers per thread, shared memory and warps."""
    from triton.runtime.errors import OutOfResources

    per_sm = plan.co_resident(n_regs, shared, num_warps, limits)
    n, room = grid[0] * grid[1], per_sm * limits.sms
    if n > room:
        raise OutOfResources(n, room, "co-resident programs (the persistent grid barrier)")


def _launch(kernel, grid: tuple[int, int], args: tuple, limits: plan.Limits, **consts) -> None:
    """kernel[grid](*args, **consts) with every program resident at once (see
    the module docstring); consts includes num_warps."""
    if INTERPRET:  # programs run one after another; the planner gives one per tile
        kernel[grid](*args, INTERPRET=True, **consts)
        return
    from triton.runtime.errors import OutOfResources

    if _cooperative_launch_supported():
        consts["launch_cooperative_grid"] = True
    compiled = kernel.warmup(*args, INTERPRET=False, grid=grid, **consts)
    compiled._init_handles()  # loads the binary: n_regs
    meta = compiled.metadata
    check_co_resident(getattr(compiled, "n_regs", 0), meta.shared, meta.num_warps, grid, limits)
    try:
        kernel[grid](*args, INTERPRET=False, **consts)
    except RuntimeError as e:
        # The driver's CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE, raised before
        # anything ran: fewer SMs than the device reports (MPS, green contexts).
        if "cooperative launch" not in str(e):
            raise
        n = grid[0] * grid[1]
        raise OutOfResources(n, n - 1, f"co-resident programs ({e})") from e


def split_h(run: plan.Launch, B: int, H: int, persistent: bool) -> tuple[tuple[int, int], dict]:
    """The grid (hidden-unit blocks, batch tiles) and the tile constants of
    _fwd_kernel / _bwd_kernel for `run`: one launch for all steps (persistent)
    or one step per launch (lstm_stepwise.py, where nothing stays resident)."""
    p = run.plan
    grid = (triton.cdiv(H, p.block_j), triton.cdiv(B, p.block_b))
    consts = dict(
        BLOCK_B=p.block_b,
        BLOCK_J=p.block_j,
        BLOCK_K=p.block_k,
        W_RESIDENT=p.w_resident and persistent,
        PERSISTENT=persistent,
        PREC=run.prec,
        num_warps=p.num_warps,
    )
    return grid, consts


def forward(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, training: bool, run: plan.Launch
) -> tuple[Tensor, Tensor, Tensor]:
    """gx[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] -> y[T,B,H], c_all[T+1,B,H] fp32, gates.

    One launch for all T steps over a grid of cdiv(H, block_j) x cdiv(B, block_b)
    programs, which must all be resident at once on the device of run.limits
    (the planner keeps the grid within its SM count, _launch checks the
    compiled kernel's occupancy: OutOfResources otherwise) and whose barrier
    counter must not pass 2^31 (cdiv(H, block_j) * T < 2^31, kernels/plan.py).
    """
    T, B, G = gx.shape
    H = G // 4
    y, c_all, gates = forward_outputs(gx, c0, training)
    if T * B == 0:
        return y, c_all, gates
    grid, consts = split_h(run, B, H, persistent=True)
    gates_out = gates if training else y  # never written when not training
    args = (gx, w_hh, h0, c_all, y, gates_out, counters(grid[1], gx.device), 0, T, B, H)
    _launch(_fwd_kernel, grid, args, run.limits, STORE_GATES=training, **consts)
    return y, c_all, gates


def backward(
    dy: Tensor,
    dhT: Tensor,
    dcT: Tensor,
    w_hh: Tensor,
    c_all: Tensor,
    gates: Tensor,
    run: plan.Launch,
) -> tuple[Tensor, Tensor, Tensor]:
    """dy[T,B,H], dhT[B,H], dcT[B,H], w_hh[4H,H], c_all[T+1,B,H], gates[T,B,4H]
    -> dgx[T,B,4H], dh0[B,H], dc0[B,H] (all in the input dtype). One launch, as
    forward()."""
    T, B, H = dy.shape
    dgx, dh, dc = backward_buffers(dy, dhT, dcT)
    if T * B > 0:
        grid, consts = split_h(run, B, H, persistent=True)
        args = (dy, w_hh, c_all, gates, dgx, dh, dc, counters(grid[1], dy.device), T - 1, T, B, H)
        _launch(_bwd_kernel, grid, args, run.limits, DO_POINTWISE=True, DO_DOT=True, **consts)
    return dgx, dh.to(dy.dtype), dc.to(dy.dtype)
