"""The CPU backend's paths: the fused fp32 kernels, the weight-gradient GEMM,
the narrower ISAs, and a light import."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn_fast import _ops
from charrnn_fast.backends import reference

fused = pytest.mark.skipif(_ops.cpu_vector_width() == 0, reason="no AVX2/AVX-512 fused kernels")


def test_import_does_not_load_dynamo_and_compile_still_gets_allow_rnn():
    code = (
        "import sys, charrnn_fast\n"
        "assert 'torch._dynamo' not in sys.modules, 'charrnn_fast imported torch._dynamo'\n"
        "import torch._dynamo\n"
        "assert torch._dynamo.config.allow_rnn\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


SHAPES = [(3, 1, 7), (4, 19, 33), (2, 25, 16), (3, 13, 100), (2, 50, 48), (5, 1, 100), (4, 5, 130),
          (2, 3, 9), (2, 90, 196)]  # fmt: skip


@fused
@pytest.mark.parametrize("T,B,H", SHAPES)
def test_fused_fp32_kernels_against_float64(T, B, H, two_threads):
    # Odd H (partial vectors), every tile height (B = 1, 3, 13, 19, 25, 50); more
    # rows per thread than one group of the AVX2 step (B = 90, H = 196: 45 rows,
    # groups of at most 40); with two threads, rows split between them (B >= 12)
    # or units (B < 12, H >= 64).
    g = torch.Generator().manual_seed(0)
    gx, w = torch.randn(T, B, 4 * H, generator=g), torch.randn(4 * H, H, generator=g) * 0.3
    h0, c0 = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    out = torch.ops.charrnn_fast.lstm_fwd(gx, w, h0, c0, True)
    ref = reference.lstm_fwd(gx.double(), w.double(), h0.double(), c0.double(), True)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-5)
    dy, dh, dc = (torch.randn(s, generator=g) for s in ((T, B, H), (B, H), (B, H)))
    got = torch.ops.charrnn_fast.lstm_bwd(dy, dh, dc, w, *out, h0)
    want = reference.lstm_bwd(dy.double(), dh.double(), dc.double(), w.double(),
                              *(t.double() for t in out), h0.double())  # fmt: skip
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-5 * max(1.0, b.abs().max()))


@pytest.mark.parametrize("K,M,N", [(1, 1, 1), (300, 77, 5), (1001, 509, 130), (129, 6, 33)])
def test_mm_tn(K, M, N):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(K, M, generator=g), torch.randn(K, N, generator=g)
    got = torch.ops.charrnn_fast.mm_tn(a, b)
    torch.testing.assert_close(got.double(), a.double().t() @ b.double(), rtol=0, atol=1e-4)
    assert torch.equal(
        torch.ops.charrnn_fast.mm_tn(a.double(), b.double()), a.double().t() @ b.double()
    )
    with pytest.raises(RuntimeError, match=r"mm_tn wants a \[K, M\] and b \[K, N\]"):
        torch.ops.charrnn_fast.mm_tn(a, b[1:])


def test_weight_gradient_of_no_rows_is_zero():
    # K = 0 (a batch of no rows): a sum over nothing, whichever GEMM serves.
    got = torch.ops.charrnn_fast.mm_tn(torch.randn(0, 7), torch.randn(0, 5))
    assert torch.equal(got, torch.zeros(7, 5))
    H = 16
    gx, w, h = torch.randn(3, 0, 4 * H), torch.randn(4 * H, H), torch.zeros(0, H)
    out = torch.ops.charrnn_fast.lstm_fwd(gx, w, h, h, True)
    _, dw, _, _ = torch.ops.charrnn_fast.lstm_bwd(torch.zeros(3, 0, H), h, h, w, *out, h)
    assert torch.equal(dw, torch.zeros(4 * H, H))


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (97, 13, 5), (250, 512, 128), (7, 129, 33)])
def test_mm_nt(M, K, N):
    # a w^T + bias, with w contiguous or a transposed view (the input gradient's
    # W_ih.t()); every row-block and column-block edge case above.
    g = torch.Generator().manual_seed(2)
    a, w, b = (
        torch.randn(M, K, generator=g),
        torch.randn(N, K, generator=g),
        torch.randn(N, generator=g),
    )
    want = a.double() @ w.double().t() + b.double()
    op = torch.ops.charrnn_fast.mm_nt
    torch.testing.assert_close(op(a, w, b).double(), want, rtol=0, atol=1e-4)
    wt = w.t().contiguous().t()  # same values, strides (1, N)
    torch.testing.assert_close(op(a, wt, None).double(), want - b.double(), rtol=0, atol=1e-4)
    assert torch.equal(
        op(a.double(), w.double(), b.double()), torch.addmm(b.double(), a.double(), w.double().t())
    )
    with pytest.raises(RuntimeError, match=r"mm_nt wants a \[M, K\] and w \[N, K\]"):
        op(a, w[:, :-1] if K > 1 else w.new_empty(N, 2), None)
    with pytest.raises(RuntimeError, match=r"mm_nt: bias must be \[" + str(N) + r"\]"):
        op(a, w, b[:-1] if N > 1 else b.new_empty(3))


@pytest.mark.parametrize("isa,width", [("avx2", 8), ("none", 0)])
def test_narrower_cpu_kernels_pass_the_same_checks(isa, width):
    # This machine may take the AVX-512 kernels; CHARRNN_FAST_CPU_ISA makes the
    # AVX2 kernels (or the general path) serve the same tests in a fresh process.
    if _ops.cpu_vector_width() < max(width, 1):
        pytest.skip(f"this CPU has no {isa} kernels wider than what already runs")
    env = {**os.environ, "CHARRNN_FAST_CPU_ISA": isa}
    code = "from charrnn_fast import _ops; print(_ops.cpu_vector_width())"
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert int(got.stdout.strip()) == width
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         str(Path(__file__).with_name("test_generate.py")),
         str(Path(__file__).with_name("test_cpu_backend.py")),
         "-k", "not narrower and not bad_isa"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout


def test_bad_isa_value_is_named():
    # Named by the first LSTM call, not at import: the CLI can then say it in one line.
    env = {**os.environ, "CHARRNN_FAST_CPU_ISA": "sse9"}
    code = "import torch, charrnn_fast; charrnn_fast.LSTM(2, 3)(torch.randn(1, 1, 2))"
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert got.returncode != 0
    assert "CHARRNN_FAST_CPU_ISA must be auto, avx512, avx2 or none, got 'sse9'" in got.stderr
