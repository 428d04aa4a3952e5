"""Links 1 and 2 of the chain of trust (docs/DESIGN.md): the reference against nn.LSTM in float64,
and gradcheck of the explicit backward that the kernels implement."""

import pytest
import torch
from torch import nn

import charrnn_fast
from charrnn_fast import backends
from charrnn_fast.autograd import LSTMRecurrence
from tests.lstm.chain import make_inputs, run

CONFIGS = [
    # (I, H, layers, bidirectional, bias, batch_first, T, B)
    (5, 7, 1, False, True, False, 6, 3),
    (4, 8, 3, False, True, True, 5, 2),
    (3, 6, 2, True, True, False, 4, 3),
    (6, 5, 2, True, False, True, 3, 1),
    (4, 4, 1, False, True, False, 1, 1),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_reference_matches_nn_lstm_float64(cfg):
    I, H, L, bi, bias, bf, T, B = cfg
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, L, bias=bias, batch_first=bf, bidirectional=bi)
    ours = charrnn_fast.from_torch(ref, backend="reference")
    inputs = make_inputs(ref, T, B)
    truth = run(ref, inputs, torch.float64)
    got = run(ours, inputs, torch.float64)
    for k in truth:
        err = (got[k] - truth[k]).abs().max().item()
        print(f"{k:18s} {err:.3e}")
        assert err <= 1e-10, k


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 3), (4, 2, 5)])
def test_gradcheck_explicit_backward(backend, T, B, H):
    """The hand-written lstm_bwd is the derivative of lstm_fwd (finite differences, float64)."""
    torch.manual_seed(1)
    be = backends.get(backend)

    def f(gx, w, h0, c0):
        return LSTMRecurrence.apply(gx, w, h0, c0, be, True)

    args = [
        torch.randn(T, B, 4 * H, dtype=torch.float64, requires_grad=True),
        (0.5 * torch.randn(4 * H, H, dtype=torch.float64)).requires_grad_(),
        torch.randn(B, H, dtype=torch.float64, requires_grad=True),
        torch.randn(B, H, dtype=torch.float64, requires_grad=True),
    ]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8, rtol=1e-6)
