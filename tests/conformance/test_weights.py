"""The module's weights as test_nn.py handles them: weight norm (the old hook
and the parametrization), weights replaced or tied after construction,
flatten_parameters, and weights read at each call. Each result is compared
with stock nn.LSTM given the same treatment."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from tests.conformance import harness
from tests.conformance.harness import BACKENDS, build, compare, device_of, leaf, run

I, H, L, B, T = 3, 4, 2, 2, 5


def _x(backend: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(6)
    return torch.randn(T, B, I, generator=g, dtype=torch.float64).to(device_of(backend))


def _same_treatment(backend: str, treat, **kw) -> None:
    """treat(module) applied to ours and to stock nn.LSTM; then forward and every
    gradient (by parameter name, so those the treatment adds too) must agree."""
    ours = build(backend, I, H, L, **kw).double()
    theirs = harness.stock(I, H, L, **kw).double()
    treat(ours)
    treat(theirs)
    x = _x(backend)
    got, want = run(ours, leaf(x)), run(theirs, leaf(x.cpu()))
    compare(got, want, want, torch.float64, backend)


@pytest.mark.parametrize("name", ["weight_hh_l0", "weight_ih_l1", "weight_hr_l0"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_norm_hook(backend, name):
    kw = {"proj_size": 2} if name == "weight_hr_l0" else {}

    def treat(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the hook is deprecated
            nn.utils.weight_norm(m, name=name)
        assert name + "_g" in dict(m.named_parameters())

    _same_treatment(backend, treat, **kw)
    # Removed again: a plain parameter, and the output it had.
    m = build(backend, I, H, L, **kw).double()
    x = _x(backend)
    before = run(m, leaf(x), backward=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.remove_weight_norm(nn.utils.weight_norm(m, name=name), name=name)
    assert isinstance(getattr(m, name), nn.Parameter)
    after = run(m, leaf(x), backward=False)
    compare(after, before, before, torch.float64, "removed")


@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l1"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_norm_parametrization(backend, name):
    def treat(m):
        parametrizations.weight_norm(m, name=name)
        assert parametrize.is_parametrized(m, name)

    _same_treatment(backend, treat)


@pytest.mark.parametrize("backend", BACKENDS)
def test_replaced_and_edited_weights_are_used(backend):
    def treat(m):
        g = torch.Generator().manual_seed(7)
        new = torch.randn(m.weight_hh_l0.shape, generator=g, dtype=torch.float64)
        m.weight_hh_l0 = nn.Parameter(new.to(m.weight_hh_l0.device))
        with torch.no_grad():
            m.weight_ih_l1.mul_(-2)
            m.bias_hh_l1.data = m.bias_hh_l1.data + 1

    _same_treatment(backend, treat, bidirectional=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deleted_then_restored_weight(backend):
    # A weight deleted, the module converted while it is missing, the weight set again.
    def treat(m):
        w = m.weight_hh_l0
        del m.weight_hh_l0
        assert not hasattr(m, "weight_hh_l0")
        m.to(torch.float64)
        m.weight_hh_l0 = nn.Parameter(w.detach().double())

    _same_treatment(backend, treat)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tied_weights(backend):
    # One Parameter under two names: its gradient is the sum of both uses.
    def treat(m):
        m.bias_hh_l0 = m.bias_ih_l0
        m.weight_hh_l1 = m.weight_hh_l0
        assert len(list(m.parameters())) == 6

    _same_treatment(backend, treat)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flatten_parameters_changes_nothing(backend):
    m = build(backend, I, H, L, bidirectional=True).double()
    x = _x(backend)
    before = run(m, leaf(x))
    weights = {n: p.detach().clone() for n, p in m.named_parameters()}
    m.zero_grad()
    assert m.flatten_parameters() is None
    for n, p in m.named_parameters():
        assert torch.equal(p, weights[n]), n
    after = run(m, leaf(x))
    for k in before:
        assert torch.equal(after[k], before[k]), k
