"""Second derivatives: correct where offered (the reference backend), a clear
error where not (the fused backends), never a silently wrong result."""

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


@pytest.mark.parametrize(
    "layers,bidirectional,T", [(1, False, 1), (2, False, 3), (2, True, 2)], ids=str
)
def test_gradgradcheck_reference_backend(layers, bidirectional, T):
    torch.manual_seed(0)
    # Small: gradgradcheck's cost grows with the square of the input count.
    m = charrnn_fast.LSTM(2, 3, layers, bidirectional=bidirectional, backend="reference")
    m = m.double()
    inputs = make_inputs(m, T, 2)
    f, weights = _module_fn(m)
    args = [inputs[k].clone().requires_grad_() for k in ("x", "h0", "c0")] + weights
    assert torch.autograd.gradgradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradient_penalty_matches_nn_lstm():
    """d/dW of |dL/dW|^2 (a gradient penalty) equals nn.LSTM's, in float64."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, 2, batch_first=True).double()
    ours = charrnn_fast.from_torch(ref, backend="reference")
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    results = []
    for m in (ref, ours):
        out, (h, c) = m(x)
        loss = out.sin().sum() + h.square().sum() + c.sum()
        params = list(m.parameters())
        g = torch.autograd.grad(loss, params, create_graph=True)
        penalty = sum(gi.square().sum() for gi in g)
        results.append(torch.autograd.grad(penalty, params))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["cpu"])
def test_fused_backend_refuses_double_backward_clearly(backend):
    torch.manual_seed(0)
    m = charrnn_fast.LSTM(3, 4, 1, backend=backend).double()
    inputs = make_inputs(m, 3, 2)
    f, weights = _module_fn(m)
    args = [inputs[k].clone().requires_grad_() for k in ("x", "h0", "c0")] + weights
    with pytest.raises(RuntimeError, match=r"double backward.*backend='reference'"):
        torch.autograd.gradgradcheck(f, args)
    # First-order gradients are unaffected, and create_graph is what is refused.
    out, h, c = f(*args)
    torch.autograd.grad(out.sum(), args)
    out, h, c = f(*args)
    with pytest.raises(RuntimeError, match=f"not supported by backend '{backend}'"):
        torch.autograd.grad(out.sum(), args, create_graph=True)
