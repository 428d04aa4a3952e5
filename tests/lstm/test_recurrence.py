"""charrnn_fast/recurrence.py: packed segments and the projection, piece by piece,
against the float64 truth (the reference's projected step, nn.LSTM)."""

import pytest
import torch

from charrnn_fast import recurrence
from charrnn_fast.backends import get, reference


def test_segments_are_runs_of_one_batch_size_with_their_packed_offsets():
    assert recurrence._segments([3, 3, 2, 1, 1]) == [(0, 2, 3, 0), (2, 3, 2, 6), (3, 5, 1, 8)]
    assert recurrence._segments([4]) == [(0, 1, 4, 0)]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_folded_projection_equals_the_projected_step(backend):
    """The fold that cuda and triton use (W_hh W_hr as the recurrent weight, h0's
    term in step 0), run here on a CPU backend's plain op: the same values and
    gradients as the step as written, in float64."""
    g = torch.Generator().manual_seed(0)
    T, B, H, P = 5, 3, 6, 2
    args = [
        torch.randn(T, B, 4 * H, generator=g, dtype=torch.float64),
        torch.randn(4 * H, P, generator=g, dtype=torch.float64) * 0.5,
        torch.randn(P, H, generator=g, dtype=torch.float64) * 0.5,
        torch.randn(B, P, generator=g, dtype=torch.float64),
        torch.randn(B, H, generator=g, dtype=torch.float64),
    ]
    outs = []
    for fn in (
        lambda *a: reference.projected(*a),
        lambda *a: recurrence._folded(*a, get(backend), True),
    ):
        leaves = [a.clone().requires_grad_() for a in args]
        y, h, c = fn(*leaves)
        grads = torch.autograd.grad((y.sin().sum() + h.sum() + c.square().sum()), leaves)
        outs.append([y, h, c, *grads])
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
