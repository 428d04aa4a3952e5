"""Micro-benchmarks (pytest-benchmark): one recurrence step, the whole recurrence
through the autograd op (forward, forward+backward), one sampling step of a small
char model. Every registered backend usable on the device is benchmarked (CUDA
when there is a GPU, else CPU); each result is also checked against the float64
reference, so a benchmark of a wrong kernel fails.

    python -m pytest tests/bench --benchmark-only            # measure
    python -m pytest tests/bench --benchmark-disable         # CI: run each once

Legend: T steps, B batch, H hidden units, V vocabulary.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from charrnn_fast import backends
from charrnn_fast.autograd import LSTMRecurrence
from charrnn_fast.backends import reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
B, H, T, V = 16, 64, 32, 65


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _backend(name: str) -> backends.Backend:
    b = backends.get(name)
    reason = b.why_not(
        torch.empty((T, B, 4 * H), device=DEVICE), torch.empty((4 * H, H), device=DEVICE)
    )
    if reason is not None:
        pytest.skip(f"backend {name!r} cannot run on {DEVICE}: {reason}")
    return b


def _inputs(steps: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, ...]:
    """gx[steps,B,4H], w_hh[4H,H], h0[B,H], c0[B,H] from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    gx = torch.randn((steps, B, 4 * H), generator=g)
    w_hh = torch.randn((4 * H, H), generator=g) * H**-0.5
    h0, c0 = torch.randn((B, H), generator=g), torch.randn((B, H), generator=g)
    return tuple(t.to(device=DEVICE, dtype=dtype) for t in (gx, w_hh, h0, c0))


def _tol(got: Tensor, want64: Tensor, ref32: Tensor) -> None:
    """got within 2x the fp32 reference's own error (vs float64) + 1e-5 x magnitude."""
    diff = (got.double() - want64).abs()
    err, mean = diff.max().item(), diff.mean().item()
    scale = max(1.0, want64.abs().max().item())
    tol = 2 * (ref32.double() - want64).abs().max().item() + 1e-5 * scale
    print(f"max abs err {err:.3g}, mean {mean:.3g}, tol {tol:.3g}")
    assert err <= tol


@pytest.mark.parametrize("name", backends.names())
def test_one_recurrence_step(benchmark, name: str) -> None:
    b = _backend(name)
    gx, w_hh, h0, c0 = _inputs(1)

    def step() -> Tensor:
        y = b.fwd(gx, w_hh, h0, c0, False)[0]
        _sync()
        return y

    y = benchmark(step)
    want = reference.lstm_fwd(*(t.double() for t in (gx, w_hh, h0, c0)), False)[0]
    _tol(y, want, reference.lstm_fwd(gx, w_hh, h0, c0, False)[0])


@pytest.mark.parametrize("name", backends.names())
def test_recurrence_forward(benchmark, name: str) -> None:
    b = _backend(name)
    gx, w_hh, h0, c0 = _inputs(T)

    def fwd() -> Tensor:
        with torch.no_grad():
            y = LSTMRecurrence.apply(gx, w_hh, h0, c0, b, False)[0]
        _sync()
        return y

    y = benchmark(fwd)
    want = reference.lstm_fwd(*(t.double() for t in (gx, w_hh, h0, c0)), False)[0]
    _tol(y, want, reference.lstm_fwd(gx, w_hh, h0, c0, False)[0])


def _grads(b: backends.Backend, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    y, hT, cT = LSTMRecurrence.apply(*leaves, b, True)
    dy = torch.ones_like(y)
    return torch.autograd.grad((y, hT, cT), leaves, (dy, torch.ones_like(hT), torch.ones_like(cT)))


@pytest.mark.parametrize("name", backends.names())
def test_recurrence_forward_backward(benchmark, name: str) -> None:
    b = _backend(name)
    inputs = _inputs(T)

    def fwdbwd() -> tuple[Tensor, ...]:
        grads = _grads(b, inputs)
        _sync()
        return grads

    grads = benchmark(fwdbwd)
    ref = backends.get("reference")
    want = _grads(ref, tuple(t.double() for t in inputs))
    ref32 = _grads(ref, inputs)
    for got, w, r in zip(grads, want, ref32, strict=True):
        _tol(got, w, r)


class _TinyCharModel(nn.Module):
    """One-hot -> LSTM -> head: bench depends on the library only, not on the app's CharRNN."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        from charrnn_fast import LSTM

        self.rnn, self.head = LSTM(V, H, 2, backend=backend), nn.Linear(H, V)

    def forward(self, idx: Tensor, state):
        y, state = self.rnn(nn.functional.one_hot(idx.t(), V).float(), state)
        return self.head(y), state


@pytest.mark.parametrize("name", backends.names())
def test_sampling_step(benchmark, name: str) -> None:
    _backend(name)
    model = _TinyCharModel(name).to(DEVICE).eval()
    g = torch.Generator(device=DEVICE).manual_seed(0)
    idx = torch.zeros((1, 1), dtype=torch.long, device=DEVICE)
    state = tuple(torch.zeros((2, 1, H), device=DEVICE) for _ in range(2))

    def sample_step() -> tuple[Tensor, tuple]:
        # One character: logits of the last position, temperature 0.8, draw.
        with torch.no_grad():
            logits, new_state = model(idx, state)
            probs = torch.softmax(logits[-1, 0] / 0.8, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=g)
        _sync()
        return nxt, new_state

    nxt, new_state = benchmark(sample_step)
    assert 0 <= int(nxt) < V
    assert [tuple(s.shape) for s in new_state] == [(2, 1, H), (2, 1, H)]
    assert all(torch.isfinite(s).all() for s in new_state)
