"""The GPU planners (docs/DESIGN.md, "Planners"), without a GPU: the one
grammar that forces a path, the device limits, the Triton planner's rules, the
CUDA planner through its op (needs a CUDA build of charrnn_fast._C, as CI
makes, not a GPU), and backends.report() with a shape.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from charrnn_fast import _ops, backends
from charrnn_fast.backends import plans
from charrnn_fast.kernels import plan as triton_planner

REPO = Path(__file__).resolve().parents[2]
NEW, OLD_CUDA, OLD_TRITON = plans.PATH_ENV, plans.REMOVED_ENV["cuda"], plans.REMOVED_ENV["triton"]
CUDA_PLANNER = pytest.mark.skipif(
    _ops.load_error() is not None or not _ops.with_cuda,
    reason="the CUDA planner is in charrnn_fast._C built with CUDA (CHARRNN_FAST_CUDA=1)",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in (NEW, OLD_CUDA, OLD_TRITON):
        monkeypatch.delenv(var, raising=False)


# (CHARRNN_FAST_PATH, CHARRNN_FAST_CUDA_PATH, CHARRNN_FAST_TRITON_PATH) ->
# forced (cuda fwd, cuda bwd, triton fwd, triton bwd), or the error's text.
GRAMMAR = [
    (("", "", ""), (None, None, None, None)),
    (("cuda:persistent", "", ""), ("persistent", "persistent", None, None)),
    (("cuda:persistent/stepwise", "", ""), ("persistent", "stepwise", None, None)),
    (("cuda:auto/stepwise, triton:small", "", ""), (None, "stepwise", "small", "small")),
    (("triton:persistent/stepwise", "", ""), (None, None, "persistent", "stepwise")),
    (("cuda:fast", "", ""), "the cuda path must be one of auto, persistent, stepwise, or"),
    (("gpu:persistent", "", ""), "must be a comma list of <backend>:<path>"),
    (("persistent", "", ""), "must be a comma list of <backend>:<path>"),
    (("cuda:auto,cuda:stepwise", "", ""), "names cuda twice"),
    (("cuda:persistent/stepwise/auto", "", ""), "the cuda path must be one of"),
    # The former variables, set, are errors giving the new form of their value,
    # even beside a valid CHARRNN_FAST_PATH.
    (
        ("", "persistent,stepwise", ""),
        f"{OLD_CUDA} is no longer read; set {NEW}=cuda:persistent/stepwise instead",
    ),
    (
        ("cuda:auto", "stepwise", ""),
        f"{OLD_CUDA} is no longer read; set {NEW}=cuda:stepwise instead",
    ),
    (("", "", "small"), f"{OLD_TRITON} is no longer read; set {NEW}=triton:small instead"),
    (("triton:small", "", ""), (None, None, "small", "small")),
]


def _set(monkeypatch, values):
    for var, v in zip((NEW, OLD_CUDA, OLD_TRITON), values):
        if v:
            monkeypatch.setenv(var, v)


@pytest.mark.parametrize("values,want", GRAMMAR, ids=lambda v: repr(v))
def test_one_grammar_for_both_backends(values, want, monkeypatch):
    _set(monkeypatch, values)
    if isinstance(want, str):
        with pytest.raises(ValueError, match=want.replace("(", r"\(")) as e:
            plans.forced_path("cuda"), plans.forced_path("triton")
        print(e.value)
        return
    cuda, triton = plans.forced_path("cuda"), plans.forced_path("triton")
    got = (cuda.fwd, cuda.bwd, triton.fwd, triton.bwd)
    print(values, "->", got, cuda.source, triton.source)
    assert got == want


def test_malformed_setting_is_an_error_of_the_backend_choice(monkeypatch):
    # Not a silent fallback to another backend: select() raises, naming the variable.
    monkeypatch.setenv(NEW, "triton:fastest")
    gx, w = torch.empty(2, 3, 64), torch.empty(64, 16)
    with pytest.raises(ValueError, match="CHARRNN_FAST_PATH: the triton path"):
        backends.get("triton").why_not(gx, w)


@CUDA_PLANNER
@pytest.mark.parametrize("values,want", GRAMMAR, ids=lambda v: repr(v))
def test_cpp_parser_agrees_with_python(values, want, monkeypatch):
    # csrc/cuda/plan.cpp parses the same variables at every launch: same
    # choices, same error text. B=4, H=64 fits the persistent kernels of an H100.
    _set(monkeypatch, values)
    lim = [plans.H100.sms, plans.H100.smem_optin, plans.H100.l2_bytes]
    if isinstance(want, str):
        if "TRITON" in want:
            return  # the C++ parser reads the cuda settings only
        with pytest.raises(RuntimeError, match=want.replace("(", r"\(")):
            torch.ops.charrnn_fast.cuda_plan_for(4, 64, torch.float32, lim, -1)
        return
    s = torch.ops.charrnn_fast.cuda_plan_for(4, 64, torch.float32, lim, -1)
    print(values, "->", s)
    for direction, forced in zip(("fwd", "bwd"), want[:2]):
        path, geometry, why = s[0:3] if direction == "fwd" else s[3:6]
        assert path == (forced or "persistent"), (direction, s)
        assert ("forced by" in why) == (forced is not None), (direction, why)


def test_device_limits():
    assert plans.device_limits("cpu") is plans.INTERPRETER
    assert plans.INTERPRETER.sms == 1, "the interpreter runs one program at a time"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lim = plans.device_limits(0)
        assert (lim.sms, lim.l2_bytes) == (p.multi_processor_count, p.L2_cache_size)
        assert lim is plans.device_limits("cuda:0")


DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = [(1, 7), (50, 128), (64, 512), (64, 1024), (256, 1024), (4096, 256), (64, 4096)]


@pytest.mark.parametrize("limits", [plans.H100, plans.INTERPRETER], ids=lambda x: x.name)
def test_triton_plans_fit_the_device(limits):
    for (B, H), dt in ((s, d) for s in SHAPES for d in DTYPES):
        p = triton_planner.make_plan(B, H, dt, limits)
        print(B, H, dt, p.path, p.geometry, "|", p.why)
        assert p.why, "every plan says why"
        assert p.grid == (-(-H // p.block_j), -(-B // p.block_b))
        if p.path == "persistent":
            assert p.grid[0] * p.grid[1] <= limits.sms, "the barrier needs the grid co-resident"
        if p.w_resident:
            es = torch.empty((), dtype=dt).element_size()
            rows = triton_planner.padded_h(H) if p.path == "small" else p.block_j
            assert 4 * triton_planner.padded_h(H) * rows * es <= limits.smem_optin


def test_triton_small_path_thresholds_on_an_h100():
    # docs/DESIGN.md, "Which kernel runs on a GPU": H <= 64 in fp32, <= 128 in bf16/fp16.
    small = {
        dt: max(H for H in range(16, 513, 16)
                if triton_planner.make_plan(64, H, dt, plans.H100).path == "small")
        for dt in DTYPES
    }  # fmt: skip
    assert small == {torch.float32: 64, torch.bfloat16: 128, torch.float16: 128}


def test_triton_barrier_counter_cannot_wrap():
    # grid_barrier's int32 counter reaches (hidden-unit programs) x T.
    p = triton_planner.make_plan(64, 1024, torch.bfloat16, plans.H100, T=100)
    assert p.path == "persistent"
    T = triton_planner.COUNTER_LIMIT // p.grid[0]
    assert triton_planner.make_plan(64, 1024, torch.bfloat16, plans.H100, T=T - 1).path == (
        "persistent"
    )
    q = triton_planner.make_plan(64, 1024, torch.bfloat16, plans.H100, T=T)
    assert q.path == "stepwise" and "2^31" in q.why
    with pytest.raises(ValueError, match="2\\^31"):
        triton_planner.make_plan(64, 1024, torch.bfloat16, plans.H100, path="persistent", T=T)


def test_triton_forced_path_that_cannot_serve_says_why():
    with pytest.raises(ValueError, match="small-H Triton path"):
        triton_planner.make_plan(64, 512, torch.float32, plans.H100, path="small")
    with pytest.raises(ValueError, match="persistent grid"):
        triton_planner.make_plan(100_000, 1024, torch.float32, plans.H100, path="persistent")


@CUDA_PLANNER
def test_cuda_plans_on_an_h100():
    lim = [plans.H100.sms, plans.H100.smem_optin, plans.H100.l2_bytes]
    for (B, H), dt in ((s, d) for s in SHAPES for d in DTYPES):
        s = torch.ops.charrnn_fast.cuda_plan_for(B, H, dt, lim, -1)
        print(B, H, dt, s)
        for path, geometry, why in (s[:3], s[3:]):
            assert path in ("persistent", "stepwise") and why
            assert (geometry.startswith("U=")) == (path == "persistent")
            if path == "persistent":
                n = int(geometry.split("grid=")[1].split()[0])
                assert n <= plans.H100.sms
    # The headline shapes (bench/README.md) run persistent both ways in bf16.
    for B, H in ((50, 128), (64, 512)):
        s = torch.ops.charrnn_fast.cuda_plan_for(B, H, torch.bfloat16, lim, -1)
        assert s[0] == s[3] == "persistent", s
    # H not a multiple of 16: stepwise, and the reason says so.
    s = torch.ops.charrnn_fast.cuda_plan_for(5, 100, torch.float32, lim, -1)
    assert s[0] == "stepwise" and "multiple of 16" in s[2]


@CUDA_PLANNER
def test_cuda_planner_respects_aggregate_l2_bandwidth():
    # bf16 backward at H=512, B=64: with U=16 the 32 column blocks would each
    # read all 64 rows of dgates (hi and lo, 4H wide) every step, about 17 MB
    # per step through L2; the plan takes U=32 (half the traffic) instead,
    # although U=16 has the shorter per-block chain (csrc/cuda/plan.cpp).
    lim = [plans.H100.sms, plans.H100.smem_optin, plans.H100.l2_bytes]
    s = torch.ops.charrnn_fast.cuda_plan_for(64, 512, torch.bfloat16, lim, -1)
    print(s)
    assert s[3] == "persistent" and s[4].startswith("U=32 "), s


# An A100 (108 SMs, 163 KiB of opt-in shared memory per block, 40 MiB of L2).
A100 = [108, 166912, 40 * 2**20]


def _cost(why: str, what: str) -> float:
    """The modelled clk/step of `what` (persistent: the geometry's cost=) in a plan."""
    pattern = {"stepwise": r"stepwise (?:path is )?modelled at (\d+)", "persistent": r"cost=(\d+)"}
    m = re.search(pattern[what], why)
    assert m, f"no {what} cost in {why!r}"
    return float(m.group(1))


@CUDA_PLANNER
def test_cuda_planner_takes_stepwise_when_it_is_modelled_cheaper(monkeypatch):
    # The review's example: on an A100, bf16 backward at H = 1024 fits a
    # persistent geometry only with small K-chunks, modelled several times
    # slower than a cuBLAS GEMM + pointwise kernel per step.
    s = torch.ops.charrnn_fast.cuda_plan_for(64, 1024, torch.bfloat16, A100, -1)
    print(s)
    assert s[3] == "stepwise", s
    assert "cheaper than the best persistent geometry (U=" in s[5], s[5]
    step, persistent = _cost(s[5], "stepwise"), _cost(s[5], "persistent")
    assert 3 * step < persistent, "a clear win, not a coin toss"
    assert s[0] == "persistent", "the forward still wins persistent there"
    # Forcing the persistent path still gets the geometry the model rejected.
    monkeypatch.setenv(NEW, "cuda:persistent")
    forced = torch.ops.charrnn_fast.cuda_plan_for(64, 1024, torch.bfloat16, A100, -1)
    assert forced[3] == "persistent" and "forced by" in forced[5], forced


@CUDA_PLANNER
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_planner_keeps_persistent_where_it_wins(dtype):
    # The target shapes (2x128 B50, 3x512 B64) on an H100: persistent both
    # ways, and the reason gives the stepwise figure it beat.
    lim = [plans.H100.sms, plans.H100.smem_optin, plans.H100.l2_bytes]
    for B, H in ((50, 128), (64, 512)):
        s = torch.ops.charrnn_fast.cuda_plan_for(B, H, dtype, lim, -1)
        print(B, H, s)
        for path, geometry, why in (s[:3], s[3:]):
            assert path == "persistent", s
            assert _cost(geometry, "persistent") < _cost(why, "stepwise")


@CUDA_PLANNER
def test_cuda_stepwise_model_reads_w_hh_from_l2_only_when_it_fits():
    # B = 1, bf16 backward at H = 1024: the GEMM is W_hh-bound (16 MiB of hi/lo
    # weights per step). From a 50 MiB L2 it streams faster than from HBM,
    # which an 8 MiB L2 (or an unknown size, 0) forces.
    def stepwise_cost(l2: int) -> float:
        s = torch.ops.charrnn_fast.cuda_plan_for(1, 1024, torch.bfloat16, [132, 232448, l2], -1)
        return _cost(s[5], "stepwise")

    big, small, unknown = stepwise_cost(50 * 2**20), stepwise_cost(8 * 2**20), stepwise_cost(0)
    print(big, small, unknown)
    assert big < small and small == unknown


@CUDA_PLANNER
def test_cuda_planner_deepens_the_pipeline_for_small_k_chunks():
    # Among the H100 plans, the ones with small K-chunks stage 3 or 4 of them
    # (NS), where the L2 latency would otherwise be paid per chunk; large
    # chunks keep double buffering.
    lim = [plans.H100.sms, plans.H100.smem_optin, plans.H100.l2_bytes]
    stages = {}
    for (B, H), dt in ((s, d) for s in SHAPES for d in DTYPES):
        s = torch.ops.charrnn_fast.cuda_plan_for(B, H, dt, lim, -1)
        for geometry in (s[1], s[4]):
            if geometry.startswith("U="):
                kc, ns = (int(re.search(rf"{k}=(\d+)", geometry).group(1)) for k in ("KC", "NS"))
                assert 2 <= ns <= 4
                stages.setdefault(kc, set()).add(ns)
    print(stages)
    assert any(ns > 2 for kc, v in stages.items() if kc <= 256 for ns in v)
    assert all(v == {2} for kc, v in stages.items() if kc >= 1024)


@CUDA_PLANNER
def test_cuda_plan_for_rejects_bad_arguments():
    with pytest.raises(RuntimeError, match="limits must be"):
        torch.ops.charrnn_fast.cuda_plan_for(4, 64, torch.float32, [132], -1)
    with pytest.raises(RuntimeError, match="B >= 1"):
        torch.ops.charrnn_fast.cuda_plan_for(0, 64, torch.float32, [132, 232448, 0], -1)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        torch.ops.charrnn_fast.cuda_plan_for(4, 64, torch.float64, [132, 232448, 0], -1)


def test_report_prints_every_backends_plan(capsys, monkeypatch):
    monkeypatch.setenv(NEW, "triton:auto/stepwise")
    text = backends.report(shape=(64, 512), dtype=torch.bfloat16, limits=plans.H100)
    assert "plans for B=64 H=512 torch.bfloat16 on H100/H200 (nominal)" in text
    assert "triton fwd: persistent [block_b=" in text
    assert "triton bwd: stepwise [" in text and "forced" in text
    assert "cpu fwd/bwd: its one path" in text
    if _ops.load_error() is None and _ops.with_cuda:
        assert "cuda fwd: persistent [U=" in text and "cuda bwd: persistent [U=" in text
    else:
        assert "cuda: no plan" in text
    assert capsys.readouterr().out.strip() == text.strip()


def _module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:  # top level only: not inside functions
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_shared_plan_code_imports_no_triton_and_kernels_no_registry():
    # (torch._dynamo imports triton anyway when it is installed: what matters
    # is that these modules work, and import, where triton is absent.)
    lib = REPO / "charrnn_fast" / "backends"
    for path in (lib / "plans.py", lib / "triton.py", lib / "triton_runtime.py",
                 REPO / "kernels" / "plan.py"):  # fmt: skip
        bad = [n for n in _module_level_imports(path) if n.split(".")[0] == "triton"]
        assert not bad, f"{path.name} imports {bad} at module import"
    # kernels/ is the Triton kernels and their planner: no autograd, no registry.
    for path in (REPO / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(
                    ("charrnn_fast.backends", "charrnn_fast.autograd", "charrnn_fast.functional")
                ), f"{path.name} imports {node.module}"


def test_co_resident_programs_follow_the_occupancy_rules():
    # kernels/plan.py co_resident on an H100 (65536 registers, 2048 threads,
    # 228 KiB of shared memory per SM), against hand-computed limits.
    lim = plans.H100
    # 142 registers -> 18 units of 256 per warp, 4 warps: 65536 // 18432 = 3.
    assert triton_planner.co_resident(142, 10240, 4, lim) == 3
    # Shared memory: (233472) // (100000 + 1024 reserved) = 2.
    assert triton_planner.co_resident(32, 100_000, 4, lim) == 2
    # Threads: 2048 // 256 = 8; the 32-block cap: tiny kernels.
    assert triton_planner.co_resident(16, 0, 8, lim) == 8
    assert triton_planner.co_resident(0, 0, 1, lim) == 32
    # Nothing fits: more shared memory than the SM has, or 255 registers x 32 warps.
    assert triton_planner.co_resident(32, lim.smem_per_sm, 4, lim) == 0
    assert triton_planner.co_resident(255, 0, 32, lim) == 0
