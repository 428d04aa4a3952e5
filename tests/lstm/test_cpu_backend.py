"""Link 3 of the chain of trust (docs/DESIGN.md) for the C++ CPU backend: forward and backward
against the float64 truth, within twice plain PyTorch's error in the same dtype."""

import pytest
import torch
from torch import nn

import charrnn_fast
from tests.lstm.chain import assert_close_calibrated, make_inputs, run

# (B, T, H); B=19 splits into row blocks across threads (csrc/lstm_cpu.cpp).
SHAPES = [(1, 1, 7), (1, 5, 16), (3, 1, 16), (4, 9, 7), (2, 6, 33), (19, 4, 9)]
LAYOUTS = [
    # (layers, bidirectional, bias, batch_first)
    (1, False, True, False),
    (2, False, True, True),
    (3, False, False, False),
    (2, True, True, False),
    (1, True, False, True),
]


def _check(backend, dtype, B, T, H, L, bi, bias, bf, I=5, with_hx=True, batched=True):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, L, bias=bias, batch_first=bf, bidirectional=bi)
    ours = charrnn_fast.from_torch(ref, backend=backend)
    inputs = make_inputs(ref, T, B, batched=batched)
    truth = run(ref, inputs, torch.float64, with_hx=with_hx)
    plain = run(ref, inputs, dtype, with_hx=with_hx)
    got = run(ours, inputs, dtype, with_hx=with_hx)
    assert_close_calibrated(got, plain, truth, dtype, f"{backend} {dtype} B{B} T{T} H{H} L{L}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,T,H", SHAPES, ids=str)
@pytest.mark.parametrize("L,bi,bias,bf", LAYOUTS, ids=str)
def test_cpu_backend_against_reference(dtype, B, T, H, L, bi, bias, bf):
    _check("cpu", dtype, B, T, H, L, bi, bias, bf)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_without_hx_and_unbatched(backend):
    _check(backend, torch.float32, 1, 6, 8, 2, False, True, False, with_hx=False)
    _check(backend, torch.float32, 1, 6, 8, 2, True, True, True, batched=False)


def test_float16_runs_with_fp32_accumulation():
    # nn.LSTM has no float16 CPU kernel, so compare against the float32 module:
    # fp16 storage error only, well inside fp16 resolution at these sizes.
    torch.manual_seed(0)
    ref = nn.LSTM(5, 16, 2)
    ours = charrnn_fast.from_torch(ref, backend="cpu").half()
    x = torch.randn(7, 3, 5)
    out, (h, c) = ours(x.half())
    want, (wh, wc) = ref(x)
    err = (out.float() - want).abs().max().item()
    print("fp16 max err", err)
    assert out.dtype == torch.float16 and err < 5e-3
