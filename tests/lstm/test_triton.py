"""The triton backend: each kernel path vs the reference, forward and backward.

Without a GPU these run under the Triton interpreter, in their own process
(TRITON_INTERPRET must be set before the kernel modules are imported):

    TRITON_INTERPRET=1 .venv/bin/python -m pytest -m triton tests/lstm/test_triton.py

On a GPU machine the same command without TRITON_INTERPRET=1 runs the compiled
kernels, plus bigger shapes and real multi-program persistent grids (marked cuda).

Tolerances calibrate themselves: for each output, the error of the kernel vs the
float64 reference must stay within 2x the error of the reference run in the
same dtype (plain PyTorch, same numerics contract) plus a small floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
GPU = torch.cuda.is_available() and not INTERPRET
if not (INTERPRET or GPU):
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA GPU", allow_module_level=True)
triton = pytest.importorskip("triton")


def _version(v: str) -> tuple[int, int]:
    major, minor = v.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# triton-lang/triton#9171: the interpreter converts 1-element arrays to Python
# ints with int(array), which numpy >= 2.4 refuses ("only 0-dimensional arrays
# can be converted to Python scalars"). Present in triton 3.6.0, fixed by 3.8.0.
if INTERPRET and _version(triton.__version__) < (3, 7):
    import numpy

    if _version(numpy.__version__) >= (2, 4):
        pytest.skip(
            f"triton {triton.__version__}'s interpreter fails with numpy {numpy.__version__} "
            "(triton-lang/triton#9171, int() of a 1-element array; fixed in triton 3.8): "
            "use numpy < 2.4 or a newer triton to run these tests under TRITON_INTERPRET=1",
            allow_module_level=True,
        )

import charrnn_fast  # noqa: E402
from charrnn_fast import backends  # noqa: E402
from charrnn_fast.backends import plans, reference  # noqa: E402
from charrnn_fast.kernels import plan as plan_mod  # noqa: E402

pytestmark = pytest.mark.triton
DEV = torch.device("cuda" if GPU else "cpu")
LIMITS = plans.device_limits(DEV)
TB = backends.get("triton")
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
DTYPES = [torch.float32, torch.bfloat16]  # float16: test_float16 (fewer GPU compiles)
FWD_NAMES = ("y", "hT", "cT", "c_all", "gates")
BWD_NAMES = ("dgx", "dw_hh", "dh0", "dc0")


def _big(*shapes):
    """Shapes that only run on a GPU (the interpreter takes ms per program-step)."""
    return [pytest.param(*s, marks=pytest.mark.cuda) for s in shapes] if GPU else []


def _inputs(T: int, B: int, H: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """float64 inputs at nn.LSTM's scales: W ~ U(+-1/sqrt(H)), gx ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    k = H**-0.5
    d = {
        "gx": torch.randn(T, B, 4 * H, generator=g, dtype=torch.float64),
        "w_hh": (torch.rand(4 * H, H, generator=g, dtype=torch.float64) * 2 - 1) * k,
        "h0": torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
        "c0": torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
        "dy": torch.randn(T, B, H, generator=g, dtype=torch.float64),
        "dhT": torch.randn(B, H, generator=g, dtype=torch.float64),
        "dcT": torch.randn(B, H, generator=g, dtype=torch.float64),
    }
    return {n: v.to(DEV) for n, v in d.items()}


def _run(fwd, bwd, x: dict[str, torch.Tensor], dtype: torch.dtype, **kw):
    """Forward then backward of one implementation in `dtype`; outputs by name."""
    a = {n: v.to(dtype) for n, v in x.items()}
    y, c_all, gates = fwd(a["gx"], a["w_hh"], a["h0"], a["c0"], True, **kw)
    grads = bwd(a["dy"], a["dhT"], a["dcT"], a["w_hh"], y, c_all, gates, a["h0"], **kw)
    outs = (y, y[-1], c_all[-1], c_all, gates, *grads)
    return dict(zip(FWD_NAMES + BWD_NAMES, outs, strict=True))


def _compare(x: dict[str, torch.Tensor], dtype: torch.dtype, label: str, **kw) -> None:
    gold = _run(reference.lstm_fwd, reference.lstm_bwd, x, torch.float64)
    ref = _run(reference.lstm_fwd, reference.lstm_bwd, x, dtype)
    got = _run(TB.fwd, TB.bwd, x, dtype, **kw)
    failures = []
    for name in FWD_NAMES + BWD_NAMES:
        assert got[name].dtype == ref[name].dtype, f"{name}: dtype {got[name].dtype}"
        assert got[name].shape == ref[name].shape, f"{name}: shape {tuple(got[name].shape)}"
        diff = (got[name].double() - gold[name]).abs()
        err, ref_err = diff.max().item(), (ref[name].double() - gold[name]).abs().max().item()
        tol = 2 * ref_err + FLOOR[dtype]
        print(
            f"{label} {name:6s} max {err:.3e} mean {diff.mean().item():.3e} "
            f"(reference in {dtype}: {ref_err:.3e}; tol {tol:.3e})"
        )
        if not err <= tol:
            failures.append(f"{name}: {err:.3e} > {tol:.3e}")
    assert not failures, f"{label}: " + "; ".join(failures)


SMALL_SHAPES = [(1, 1, 7), (5, 3, 16), (5, 3, 32)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "T,B,H", SMALL_SHAPES + _big((50, 64, 64), (20, 300, 128), (7, 5, 100), (9, 40, 60))
)
def test_small_path(T, B, H, dtype):
    try:
        plan_mod.make_plan(B, H, dtype, LIMITS, path="small")
    except ValueError as e:  # e.g. fp32 H=100 on a GPU: W_hh does not fit one SM
        pytest.skip(str(e))
    _compare(_inputs(T, B, H), dtype, f"small T={T} B={B} H={H}", path="small")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", SMALL_SHAPES + _big((30, 64, 256), (10, 5, 1000), (8, 40, 48)))
def test_persistent_path(T, B, H, dtype):
    # Under the interpreter the plan is one program (one "SM"): this checks the
    # loop, the h exchange through y and the barrier's counting, not contention.
    _compare(_inputs(T, B, H), dtype, f"persistent T={T} B={B} H={H}", path="persistent")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", [(1, 1, 7), (4, 17, 32), *_big((20, 70, 200))])
def test_stepwise_path_many_programs(T, B, H, dtype):
    # block_j = block_b = 16 splits even these shapes across a grid of programs
    # (hidden-unit slices x batch tiles): the exchange through global memory.
    label = f"stepwise T={T} B={B} H={H}"
    _compare(_inputs(T, B, H), dtype, label, path="stepwise", block_b=16, block_j=16)


@pytest.mark.parametrize("path", plan_mod.PATHS)
@pytest.mark.parametrize("T,B,H", [(4, 3, 16), *_big((30, 64, 96))])
def test_float16(T, B, H, path):
    _compare(_inputs(T, B, H), torch.float16, f"{path} fp16 T={T} B={B} H={H}", path=path)


@pytest.mark.cuda
@pytest.mark.skipif(not GPU, reason="a multi-program persistent grid needs a GPU")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H,bj", [(25, 33, 512, 32), (200, 4, 64, 16), (20, 64, 1024, 32)])
def test_persistent_grid_barrier(T, B, H, bj, dtype):
    # Many programs spinning on the per-batch-tile counters: a broken barrier
    # shows up as stale h rows (wrong y) or as a hang. The last shape fills
    # 128 SMs of an H100 (co-residency of the whole grid).
    grid = (-(-H // bj), -(-B // 16))
    if grid[0] * grid[1] > LIMITS.sms:
        pytest.skip(f"grid {grid} exceeds this GPU's SM count")
    label = f"persistent grid {grid} T={T}"
    _compare(_inputs(T, B, H), dtype, label, path="persistent", block_j=bj, block_b=16)


def test_eval_mode_no_gates():
    x = {n: v.float() for n, v in _inputs(3, 2, 16).items()}
    y, c_all, gates = TB.fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], False)
    y_ref, c_ref, _ = reference.lstm_fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], False)
    print("eval y max diff", (y - y_ref).abs().max().item())
    assert gates.numel() == 0
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c_all, c_ref, atol=1e-5, rtol=0)


def test_bad_arguments_name_the_argument():
    x = {n: v.float() for n, v in _inputs(2, 3, 16).items()}
    with pytest.raises(ValueError, match="h0 must have shape"):
        TB.fwd(x["gx"], x["w_hh"], x["h0"][:2], x["c0"], True)
    with pytest.raises(ValueError, match="w_hh must have dtype"):
        TB.fwd(x["gx"], x["w_hh"].double(), x["h0"], x["c0"], True)
    y, c_all, _ = TB.fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], False)
    with pytest.raises(ValueError, match="gates is empty"):
        TB.bwd(x["dy"], x["dhT"], x["dcT"], x["w_hh"], y, c_all, torch.empty(0), x["h0"])
    assert "dtype" in TB.why_not(x["gx"].double(), x["w_hh"].double())
    with pytest.raises(ValueError, match="path must be one of"):
        TB.fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], True, path="nope")


def test_out_of_resources_falls_back(monkeypatch):
    # The compiler's "does not fit" (raised before any launch) moves down the
    # chain small -> persistent -> persistent streaming W -> stepwise, once.
    from triton.runtime.errors import OutOfResources

    from charrnn_fast.backends import triton as tb_mod

    seen = []

    def launch(p):
        seen.append((p.path, p.w_resident))
        if p.path != "stepwise":
            raise OutOfResources(300_000, 232_448, "shared memory")
        return "ok"

    monkeypatch.setattr(plans, "FALLBACKS", plans.FallbackCache())
    monkeypatch.delenv("CHARRNN_FAST_PATH", raising=False)
    like = torch.empty(0, dtype=torch.bfloat16, device=DEV)
    with pytest.warns(UserWarning, match="does not fit"):
        assert tb_mod._run("fwd", 3, 16, 5, like, launch, {}) == "ok"
    chain = [("small", True), ("persistent", True), ("persistent", False), ("stepwise", False)]
    assert seen == chain
    seen.clear()
    assert tb_mod._run("fwd", 3, 16, 5, like, launch, {}) == "ok"
    assert seen == [("stepwise", False)], "the working plan is remembered"
    seen.clear()
    with pytest.warns(UserWarning, match="does not fit"):
        tb_mod._run("bwd", 3, 16, 5, like, launch, {})
    assert seen == chain, "each direction degrades on its own"
    with pytest.raises(OutOfResources):
        tb_mod._run("fwd", 3, 16, 5, like, launch, {"path": "small"})  # forced: never degrades
    monkeypatch.setenv("CHARRNN_FAST_PATH", "triton:small")
    with pytest.raises(OutOfResources):
        tb_mod._run("fwd", 3, 16, 5, like, launch, {})  # forced by the environment alike


def test_plans_respect_the_device():
    smem, sms = LIMITS.smem_optin, LIMITS.sms
    for B, H in [(1, 7), (64, 64), (64, 1024), (512, 4096), (4096, 256)]:
        for dt in (torch.float32, torch.bfloat16):
            p = plan_mod.make_plan(B, H, dt, LIMITS)
            print(B, H, dt, p)
            assert p.grid == (-(-H // p.block_j), -(-B // p.block_b))
            if p.path == "persistent":
                assert p.grid[0] * p.grid[1] <= sms  # co-residency of the barrier
            if p.w_resident:
                es = torch.empty((), dtype=dt).element_size()
                rows = plan_mod.padded_h(H) if p.path == "small" else p.block_j
                assert 4 * plan_mod.padded_h(H) * rows * es <= smem
    assert plan_mod.make_plan(3, 16, torch.float32, LIMITS).path == "small"


def test_kernels_not_imported_by_the_package():
    # TRITON_INTERPRET must be settable after `import charrnn_fast`: the
    # @triton.jit modules load at the first call only.
    code = (
        "import sys, charrnn_fast, charrnn_fast.backends as b; b.report();"
        "bad = [m for m in sys.modules if m.startswith('charrnn_fast.kernels.lstm')];"
        "assert not bad, bad"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    print(r.stdout, r.stderr)
    assert r.returncode == 0


@pytest.mark.skipif(not INTERPRET, reason="the GPU run compiles every kernel anyway")
def test_kernels_compile_for_sm90():
    # The interpreter checks numerics, not what the compiler accepts: compile
    # each variant for sm_90 with the local triton (no GPU needed) and check
    # that the barrier's arrival is an acq_rel atomic at GPU scope and its
    # polling an acquire load at GPU scope (no atomic read-modify-write).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "bench.triton_compile_check", "--H", "48"]
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([*cmd, "--dtype", "bf16"], env=env, capture_output=True, text=True, cwd=repo)
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 7, "small fwd/bwd, persistent fwd/bwd, stepwise fwd + 2 bwd halves"
    persistent = [ln for ln in lines if ln.startswith("persistent")]
    assert len(persistent) == 2
    for ln in persistent:
        assert "atoms=['atom.global.gpu.acq_rel.add.u32']" in ln, ln
        assert "polls=['ld.acquire.gpu.global.b32']" in ln, ln


def test_persistent_counters_are_128_bytes_apart(monkeypatch):
    # One counter per batch tile, 32 int32 words apart (never in one L2
    # sector); each ends at (programs of its tile) x T after a launch.
    from charrnn_fast.backends import triton_runtime

    persistent = triton_runtime.kernels()["persistent"]
    made, original = [], persistent.counters

    def spy(n_tiles, device):
        made.append(original(n_tiles, device))
        return made[-1]

    monkeypatch.setattr(persistent, "counters", spy)
    T, B, H = 3, 40, 16
    tiles = -(-B // 16)
    monkeypatch.setattr(
        plans, "device_limits", lambda device=None: replace(LIMITS, sms=max(LIMITS.sms, tiles))
    )
    x = {n: v.float().to(DEV) for n, v in _inputs(T, B, H).items()}
    kw = {"path": "persistent", "block_b": 16, "block_j": 16}
    y, c_all, gates = TB.fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], True, **kw)
    TB.bwd(x["dy"], x["dhT"], x["dcT"], x["w_hh"], y, c_all, gates, x["h0"], **kw)
    assert len(made) == 2, "one set of counters per launch"
    assert persistent.COUNTER_STRIDE.value * 4 == 128
    for count in made:
        assert count.dtype == torch.int32 and count.numel() == tiles * 32
        want = torch.zeros(tiles * 32, dtype=torch.int32)
        want[::32] = T  # grid (1, tiles): one program per tile, one arrival per step
        assert torch.equal(count.cpu(), want), count.view(tiles, 32)[:, :2]


def test_occupancy_check_refuses_a_grid_that_cannot_be_co_resident():
    from triton.runtime.errors import OutOfResources

    from charrnn_fast.backends import triton_runtime

    persistent = triton_runtime.kernels()["persistent"]
    lim = plans.H100  # 132 SMs
    # 200 KB of shared memory: one program per SM, so 132 fit and 134 do not.
    persistent.check_co_resident(128, 200_000, 8, (66, 2), lim)
    with pytest.raises(OutOfResources, match="co-resident programs"):
        persistent.check_co_resident(128, 200_000, 8, (67, 2), lim)
    # More shared memory than an SM has: not even one program.
    with pytest.raises(OutOfResources, match="co-resident programs"):
        persistent.check_co_resident(32, lim.smem_per_sm, 4, (1, 1), lim)


@pytest.mark.cuda
@pytest.mark.skipif(not GPU, reason="the occupancy check runs on compiled kernels")
def test_persistent_grid_that_cannot_be_co_resident_falls_back(monkeypatch):
    # A device whose SMs hold no program of the compiled kernel (registers):
    # the persistent launch is refused before it runs, and the call falls back
    # down the ladder to the stepwise path with a warning, with the right result.
    monkeypatch.setattr(plans, "FALLBACKS", plans.FallbackCache())
    monkeypatch.delenv("CHARRNN_FAST_PATH", raising=False)
    tiny = replace(LIMITS, regs_per_sm=1)
    monkeypatch.setattr(plans, "device_limits", lambda device=None: tiny)
    T, B, H = 6, 64, 512
    assert plan_mod.make_plan(B, H, torch.float32, tiny).path == "persistent"
    x = {n: v.float().to(DEV) for n, v in _inputs(T, B, H).items()}
    with pytest.warns(UserWarning, match="co-resident programs"):
        y, _, _ = TB.fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], True)
    want, _, _ = reference.lstm_fwd(x["gx"], x["w_hh"], x["h0"], x["c0"], True)
    torch.testing.assert_close(y, want, atol=1e-4, rtol=0)
    key = plans.fallback_key("triton", "fwd", DEV, torch.float32, B, H)
    assert dict(plans.FALLBACKS.get(key)) == {"path": "stepwise"}


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_module_matches_nn_lstm(bidirectional):
    torch.manual_seed(0)
    I, H, T, B, L = 6, 16, 5, 3, 2
    ref = torch.nn.LSTM(I, H, num_layers=L, bidirectional=bidirectional).double().to(DEV)
    mods = {
        "nn": torch.nn.LSTM(I, H, num_layers=L, bidirectional=bidirectional).to(DEV),
        "triton": charrnn_fast.LSTM(
            I, H, num_layers=L, bidirectional=bidirectional, backend="triton"
        ).to(DEV),
    }
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I, dtype=torch.float64, device=DEV)
    h0 = torch.randn(L * D, B, H, dtype=torch.float64, device=DEV) * 0.5
    c0 = torch.randn(L * D, B, H, dtype=torch.float64, device=DEV) * 0.5
    dout = torch.randn(T, B, D * H, dtype=torch.float64, device=DEV)

    def run(m, dt):
        m.load_state_dict(ref.state_dict())
        m.to(dt)
        xs, hs, cs = (t.detach().to(dt).requires_grad_() for t in (x, h0, c0))
        out, (hn, cn) = m(xs, (hs, cs))
        (out * dout.to(dt)).sum().add((hn + 2 * cn).sum()).backward()
        grads = {f"d{n}": p.grad for n, p in m.named_parameters()}
        return {"out": out, "hn": hn, "cn": cn, "dx": xs.grad, "dh0": hs.grad, "dc0": cs.grad,
                **grads}  # fmt: skip

    gold = run(ref, torch.float64)
    # cuDNN's LSTM uses TF32 by default on a GPU; compare against exact fp32.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        base = run(mods["nn"], torch.float32)
    got = run(mods["triton"], torch.float32)
    for name, g in gold.items():
        err = (got[name].double() - g).abs().max().item()
        base_err = (base[name].double() - g).abs().max().item()
        print(f"{name:22s} triton {err:.3e}  nn.LSTM fp32 {base_err:.3e}")
        assert err <= 2 * base_err + 1e-5, name


@pytest.mark.parametrize("proj", [0, 4])
def test_packed_sequences_match_nn_lstm(proj):
    """Variable-length, unsorted batches run through the triton kernels in
    segments of one batch size (charrnn_fast/recurrence.py), both directions."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 16, 2, bidirectional=True, proj_size=proj).double().to(DEV)
    ours = charrnn_fast.from_torch(ref, backend="triton").float()
    x = torch.randn(5, 3, 6, dtype=torch.float64, device=DEV)
    lengths = torch.tensor([3, 5, 1])
    got, want = [], []
    for m, dt, out in ((ref, torch.float64, want), (ours, torch.float32, got)):
        xs = x.detach().to(dt, copy=True).requires_grad_()
        y, (h, c) = m(pack_padded_sequence(xs, lengths, enforce_sorted=False))
        (y.data.sum() + (h * 2).sum() + c.sum()).backward()
        out += [y.data, h, c, xs.grad, *(p.grad for p in m.parameters())]
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=1e-4)
