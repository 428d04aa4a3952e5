"""Second derivatives: correct where offered (the reference backend), a clear
error where not (the fused backends), never a silently wrong result."""

import copy

import pytest
import torch
from torch import nn

import charrnn_fast
from tests.lstm.chain import make_inputs


def _module_fn(m: nn.LSTM):
    """f(x, h0, c0, *weights) -> (out, h_n, c_n) with the weights as explicit inputs."""
    names = [n for n, _ in m.named_parameters()]

    def f(x, h0, c0, *weights):
        params = dict(zip(names, weights))
        out, (h, c) = torch.func.functional_call(m, params, (x, (h0, c0)))
        return out, h, c

    return f, [p.detach().clone().requires_grad_() for p in m.parameters()]


BACKENDS = ["reference", "cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "layers,bidirectional,T", [(1, False, 1), (2, False, 3), (2, True, 2)], ids=str
)
def test_gradgradcheck(backend, layers, bidirectional, T):
    torch.manual_seed(0)
    # Small: gradgradcheck's cost grows with the square of the input count.
    m = charrnn_fast.LSTM(2, 3, layers, bidirectional=bidirectional, backend=backend)
    m = m.double()
    inputs = make_inputs(m, T, 2)
    f, weights = _module_fn(m)
    args = [inputs[k].clone().requires_grad_() for k in ("x", "h0", "c0")] + weights
    assert torch.autograd.gradgradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def _penalty_grads(m: nn.LSTM, x, lengths=None):
    """d/dW of |dL/dW|^2, a gradient penalty, with packed input when lengths are given."""
    if lengths is not None:
        x = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h, c) = m(x)
    if lengths is not None:
        out = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]
    loss = out.float().sin().sum() + h.float().square().sum() + c.float().sum()
    params = list(m.parameters())
    g = torch.autograd.grad(loss, params, create_graph=True)
    penalty = sum(gi.float().square().sum() for gi in g)
    return torch.autograd.grad(penalty, params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("proj,packed", [(0, False), (2, False), (0, True), (2, True)], ids=str)
def test_gradient_penalty_matches_nn_lstm(backend, proj, packed):
    """In float64, with projections and packed, unsorted batches too."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, 2, batch_first=True, bidirectional=packed, proj_size=proj).double()
    ours = charrnn_fast.from_torch(ref, backend=backend)
    x = torch.randn(3, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([2, 4, 1]) if packed else None
    for a, b in zip(_penalty_grads(ref, x, lengths), _penalty_grads(ours, x, lengths)):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gradient_penalty_step_in_low_precision(dtype):
    """A training step with a gradient penalty on the fused CPU backend, at a
    training-like shape: within the calibrated distance of the float64 truth."""
    torch.manual_seed(0)
    ref = nn.LSTM(32, 48, 2, batch_first=True)
    x = torch.randn(8, 20, 32)
    truth = _penalty_grads(ref.double(), x.double())
    theirs = _penalty_grads(copy.deepcopy(ref).to(dtype), x.to(dtype))
    ours = _penalty_grads(charrnn_fast.from_torch(ref.to(dtype), backend="cpu"), x.to(dtype))
    for t, a, b in zip(truth, theirs, ours):
        err_theirs = (a.double() - t).abs().max().item()
        err_ours = (b.double() - t).abs().max().item()
        print(f"{dtype}: nn.LSTM {err_theirs:.3g}, ours {err_ours:.3g}")
        # Calibrated as the chain of trust: twice nn.LSTM's own error, plus one
        # rounding of the dtype at the gradient's scale.
        floor = torch.finfo(dtype).eps * t.abs().max().item()
        assert err_ours <= 2 * err_theirs + floor
