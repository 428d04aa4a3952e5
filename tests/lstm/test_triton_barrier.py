"""The persistent kernels' grid barrier, checked on the CPU (docs/DESIGN.md,
"Planners"; kernels/lstm_common.py, grid_barrier; csrc/cuda/persistent_common.cuh,
grid_arrive / grid_wait use the same protocol).

The Triton interpreter runs programs one after another, so a barrier that has to
wait for another program would hang it. Two checks instead:

1. The persistent kernel under the interpreter on a grid of one program per
   batch tile (cdiv(H, BLOCK_J) = 1): several tiles, each with its own counter,
   whose barrier is passed by its single program at every step; compared with
   the float64 reference like every other path (tests/lstm/test_triton.py).
2. The barrier's protocol in a model: each program is a state machine doing the
   kernel's shared-memory actions one atomic action at a time (read the other
   programs' slices, write its own, arrive with an atomic add, poll until the
   counter reaches its target), and `explore` visits every interleaving of
   them. It checks that no read ever sees a slice other than the one of the
   step it expects (a stale or already overwritten exchange), that no schedule
   deadlocks, and where the final counter ends. Targets n * (s + 1), the
   exchange slots (one per step in Triton, two "parities" in CUDA) and the
   int32 counter's wrap are parameters, and weakened versions must fail (proof
   that the model can fail).

What only a GPU can check (tests/lstm/test_triton.py::test_persistent_grid_barrier,
tests/lstm/test_cuda.py, bench/gpu_check.sh): that all programs of the grid are
co-resident (the planner keeps the grid within the SM count, the launch checks
the compiled kernel's occupancy and is cooperative, so the driver refuses a
grid it cannot hold: test_triton.py checks the refusal's rules on the CPU);
the memory model (the model is sequentially consistent: that the acq_rel
atomic, the acquire loads of the polling and the CTA barrier publish the plain
stores of the other warps, and that volatile loads do not hit a stale L1 line,
is the hardware's and the compiler's part; bench/triton_compile_check.py only
checks that the arrival is emitted as atom.acq_rel.gpu and the polling as
ld.acquire.gpu); forward progress of spinning programs; and the barrier's cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import pytest
import torch

from charrnn_fast.backends import plans
from charrnn_fast.kernels import plan as triton_planner

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


# ------------------------------------------------------------- the model
def int32(x: int) -> int:
    """x as the kernel's int32 counter holds it (two's complement wrap)."""
    x &= 0xFFFFFFFF
    return x - 2**32 if x >= 2**31 else x


def kernel_target(n: int, s: int) -> int:
    """The barrier target after step s of n programs (kernels/lstm_persistent.py)."""
    return int32(n * (s + 1))


@dataclass(frozen=True)
class Protocol:
    n: int  # programs sharing one counter (the hidden-unit programs of a batch tile)
    steps: int  # modelled steps
    slots: int  # exchange buffers used in rotation (Triton: one per step; CUDA: 2)
    order: str = "fwd"  # fwd: read step s-1, write s, barrier; bwd: write s, barrier, read s
    first_step: int = 0  # absolute index of the first modelled step: the counter starts
    # at n * first_step, as if that many steps had passed (to reach the wrap cheaply)
    target: object = kernel_target  # (n, s) -> int32 target of step s


@dataclass
class Outcome:
    states: int
    violations: list[str]
    deadlocks: int
    final_counters: set[int]


def _ops(p: Protocol, s: int) -> list[tuple]:
    reads = [("read", k) for k in range(p.n)] if (p.order == "bwd" or s > 0) else []
    sync = [("write",), ("arrive",), ("wait",)]
    return reads + sync if p.order == "fwd" else sync + reads


def explore(p: Protocol, max_states: int = 400_000) -> Outcome:
    """Every interleaving of p.n programs' atomic actions (depth-first, states
    deduplicated). A program is (step, pc, seen); the shared state is the
    counter and, per slot, the step whose value each program's slice holds."""
    s0, end = p.first_step, p.first_step + p.steps
    # Each slot holds the latest step before s0 that used it (h0 counts as step -1).
    init_slots = tuple(tuple([s0 - 1 - ((s0 - 1 - q) % p.slots)] * p.n) for q in range(p.slots))
    start = (tuple((s0, 0, 0) for _ in range(p.n)), p.n * s0 & 0xFFFFFFFF, init_slots)
    seen_states, stack = {start}, [start]
    out = Outcome(0, [], 0, set())
    while stack:
        progs, counter, slots = stack.pop()
        out.states += 1
        if out.states > max_states:
            raise RuntimeError(f"more than {max_states} states: model too large for a test")
        if all(s == end for s, _, _ in progs):
            out.final_counters.add(int32(counter))
            continue
        moved = False
        for j, (s, pc, seen) in enumerate(progs):
            if s == end:
                continue
            op = _ops(p, s)[pc]
            c, sl, nxt = counter, slots, (s, pc + 1, seen)
            if op[0] == "read":
                want = s - 1 if p.order == "fwd" else s
                got = slots[want % p.slots][op[1]]
                if got != want:
                    out.violations.append(
                        f"program {j} at step {s} read program {op[1]}'s slice of step {got}, "
                        f"expected step {want}"
                    )
                    continue
            elif op[0] == "write":
                row = list(slots[s % p.slots])
                row[j] = s
                sl = tuple(tuple(row) if q == s % p.slots else r for q, r in enumerate(slots))
            elif op[0] == "arrive":
                c = (counter + 1) & 0xFFFFFFFF
                nxt = (s, pc + 1, c)
            elif int32(seen) < p.target(p.n, s):  # wait: poll (blocked if nothing changed)
                if seen == counter:
                    continue
                nxt = (s, pc, counter)
            if nxt[1] == len(_ops(p, s)):
                nxt = (s + 1, 0, nxt[2])
            moved = True
            state = ((*progs[:j], nxt, *progs[j + 1 :]), c, sl)
            if state not in seen_states:
                seen_states.add(state)
                stack.append(state)
        if not moved and not out.violations:
            out.deadlocks += 1
    return out


# ------------------------------------------------------- the model's checks
@pytest.mark.parametrize("order", ["fwd", "bwd"])
@pytest.mark.parametrize(
    "n,steps,slots",
    [(2, 4, 5), (3, 2, 3), (2, 4, 2), (3, 3, 2), (4, 2, 2)],  # one slot per step (Triton); 2 (CUDA)
)
def test_barrier_protocol_is_safe_and_live(n, steps, slots, order):
    out = explore(Protocol(n, steps, slots, order))
    print(f"n={n} steps={steps} slots={slots} {order}: {out.states} states")
    assert out.violations == []
    assert out.deadlocks == 0
    assert out.final_counters == {n * steps}, "every program arrives once per step"


def test_off_by_one_target_is_caught():
    # Waiting for n * s instead of n * (s + 1) lets a program run a step ahead.
    early = Protocol(2, 3, 4, "bwd", target=lambda n, s: int32(n * s))
    out = explore(early)
    print(out.violations[:2])
    assert out.violations


def test_one_exchange_slot_is_caught():
    # A single buffer: a fast program overwrites a slice that a slow one has
    # not read yet. Two slots (parity) suffice with one barrier per step.
    for order in ("fwd", "bwd"):
        out = explore(Protocol(2, 3, 1, order))
        print(order, out.violations[:1])
        assert out.violations


def test_counter_wrap_is_caught_and_the_planner_avoids_it():
    # The largest T the Triton planner allows for a grid of n hidden-unit
    # programs keeps every target n * (s + 1) below 2^31; one step more would
    # wrap the int32 counter, and the model shows the barrier then lets a
    # program through before the others arrived.
    n = 2
    T_max = (triton_planner.COUNTER_LIMIT - 1) // n
    lim = replace(plans.H100, sms=n)
    p = triton_planner.make_plan(16, 32, torch.float32, lim, path="persistent", block_j=16, T=T_max)
    assert p.grid == (n, 1)
    with pytest.raises(ValueError, match="2\\^31"):
        triton_planner.make_plan(16, 32, torch.float32, lim, path="persistent", block_j=16,
                                 T=T_max + 1)  # fmt: skip
    safe = explore(Protocol(n, 2, 2, "bwd", first_step=T_max - 2))
    assert safe.violations == [] and safe.deadlocks == 0
    assert safe.final_counters == {n * T_max}
    wrapped = explore(Protocol(n, 2, 2, "bwd", first_step=T_max - 1))
    print(wrapped.violations[:1])
    assert wrapped.violations


# ------------------------------------ the kernel, one program per batch tile
@pytest.mark.triton
@pytest.mark.skipif(not INTERPRET, reason="under TRITON_INTERPRET=1 (a GPU runs real grids)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,B,H", [(5, 40, 32), (3, 33, 16)])
def test_persistent_kernel_one_program_per_batch_tile(T, B, H, dtype, monkeypatch):
    from charrnn_fast.backends import triton_runtime
    from tests.lstm import test_triton as tt

    persistent = triton_runtime.kernels()["persistent"]
    launched = []
    original = persistent.forward, persistent.backward

    def spy(which):
        def run(*args):
            p = args[-1].plan  # the plan.Launch, after the tensors
            launched.append((which, p.block_b, p.block_j))
            return original[which == "bwd"](*args)

        return run

    monkeypatch.setattr(persistent, "forward", spy("fwd"))
    monkeypatch.setattr(persistent, "backward", spy("bwd"))
    tiles = -(-B // 16)
    # As many "SMs" as batch tiles: the grid (1, tiles) is persistent, and each
    # tile's single program passes its own barrier alone at every step.
    limits = replace(plans.INTERPRETER, sms=tiles)
    monkeypatch.setattr(plans, "device_limits", lambda device=None: limits)
    hp = triton_planner.padded_h(H)
    label = f"persistent grid (1, {tiles}) T={T} B={B} H={H}"
    tt._compare(tt._inputs(T, B, H), dtype, label, path="persistent", block_b=16, block_j=hp)
    assert launched == [("fwd", 16, hp), ("bwd", 16, hp)], launched
