"""The properties PyTorch's own LSTM tests in test/test_nn.py check, written
here for every backend: argument and device checks with nn.LSTM's errors,
the initial hidden state, empty inputs, dropout, retained graphs, gradients
of gradients, bfloat16. Stock nn.LSTM runs the same checks as the baseline."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
from torch import nn

from tests.conformance import harness
from tests.conformance.harness import BACKENDS, build, compare, device_of, leaf, run

I, H, L, B, T = 3, 5, 2, 4, 6
BAD = 7  # prime, so no wrong size divides into a right one


def _args_cases() -> dict[str, tuple[dict, tuple, tuple, tuple]]:
    """id -> (constructor kwargs, input shape, h_0 shape, c_0 shape): one size wrong each."""
    x, h = (T, B, I), (L, B, H)
    cases = {
        "input_batch": ({}, (T, BAD, I), h, h),
        "h0_batch": ({}, x, (L, BAD, H), h),
        "c0_batch": ({}, x, h, (L, BAD, H)),
        "input_size": ({}, (T, B, BAD), h, h),
        "h0_hidden": ({}, x, (L, B, BAD), h),
        "c0_hidden": ({}, x, h, (L, B, BAD)),
        "h0_layers": ({}, x, (BAD, B, H), h),
        "c0_layers": ({}, x, h, (BAD, B, H)),
    }
    P, hp = 2, (L, B, 2)
    proj = {"proj_size": P}
    cases.update({
        "proj_input_batch": (proj, (T, BAD, I), hp, h),
        "proj_hidden_batch": (proj, x, (L, BAD, P), (L, BAD, H)),
        "proj_input_size": (proj, (T, B, BAD), hp, h),
        "proj_h0_is_hidden_size": (proj, x, h, h),
        "proj_h0_size": (proj, x, (L, B, BAD), h),
        "proj_c0_is_proj_size": (proj, x, hp, hp),
        "proj_layers": (proj, x, (BAD, B, P), (BAD, B, H)),
    })  # fmt: skip
    return cases


ARGS_CASES = _args_cases()


def _error_of(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def _assert_same_error(ours: BaseException, theirs: BaseException) -> None:
    """nn.LSTM's exception type, and a message that starts with nn.LSTM's
    (a sentence of advice may follow)."""
    assert type(ours) is type(theirs), (repr(ours), repr(theirs))
    assert re.match(re.escape(str(theirs)), str(ours)), (str(ours), str(theirs))


@pytest.mark.parametrize("case", list(ARGS_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_args_check(backend, case):
    kw, xs, hs, cs = ARGS_CASES[case]
    dev = device_of(backend)
    x, h, c = (torch.randn(s, device=dev) for s in (xs, hs, cs))
    m = build(backend, I, H, L, **kw)
    theirs = _error_of(lambda: harness.stock(I, H, L, **kw)(x.cpu(), (h.cpu(), c.cpu())))
    _assert_same_error(_error_of(lambda: m(x, (h, c))), theirs)


@pytest.mark.parametrize("where", ["input", "hx"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_device_check(backend, where):
    # On the CPU the other device is "meta" (no GPU needed); on a GPU, the CPU.
    dev = device_of(backend)
    other = "meta" if dev.type == "cpu" else "cpu"
    x, h = torch.randn(T, B, I), torch.randn(L, B, H)
    x, hx = (x.to(other), None) if where == "input" else (x.to(dev), (h.to(other), h.to(other)))
    theirs = _error_of(lambda: harness.stock(I, H, L).to(dev)(x, hx))
    _assert_same_error(_error_of(lambda: build(backend, I, H, L)(x, hx)), theirs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_dims_check(backend):
    dev = device_of(backend)
    m = build(backend, I, H, L)
    for x, hx in (
        (torch.randn(T, B, I, 1), None),  # 4-D input
        (torch.randn(T, I), (torch.randn(L, B, H),) * 2),  # unbatched input, batched hx
        (torch.randn(T, B, I), (torch.randn(L, H),) * 2),  # batched input, unbatched hx
        (torch.randn(0, B, I), None),  # no time steps
    ):
        x = x.to(dev)
        hx = None if hx is None else tuple(t.to(dev) for t in hx)
        theirs = _error_of(lambda x=x, hx=hx: harness.stock(I, H, L).to(dev)(x, hx))
        _assert_same_error(_error_of(lambda x=x, hx=hx: m(x, hx)), theirs)


@pytest.mark.parametrize(
    "kw", [{}, {"bidirectional": True, "proj_size": 2}], ids=["plain", "bi_proj"]
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_hidden_state_none_is_zeros(backend, kw):
    m = build(backend, I, H, L, **kw).double()
    dev = device_of(backend)
    D, P = (2 if kw.get("bidirectional") else 1), kw.get("proj_size") or H
    x = torch.randn(T, B, I, dtype=torch.float64)
    zeros = (
        torch.zeros(L * D, B, P, dtype=torch.float64),
        torch.zeros(L * D, B, H, dtype=torch.float64),
    )
    given = run(m, leaf(x, device=dev), tuple(leaf(z, device=dev) for z in zeros))
    implied = run(m, leaf(x, device=dev))
    for k in implied:
        torch.testing.assert_close(implied[k], given[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_proj_size_batched(backend):
    # h_n has proj_size features, c_n hidden_size; values and gradients as stock's.
    P, D = 2, 2
    g = torch.Generator().manual_seed(8)
    x = torch.randn(B, T, I, generator=g, dtype=torch.float64)
    hx = (torch.randn(L * D, B, P, generator=g, dtype=torch.float64),
          torch.randn(L * D, B, H, generator=g, dtype=torch.float64))  # fmt: skip
    kw = {"proj_size": P, "bidirectional": True, "batch_first": True}
    m = build(backend, I, H, L, **kw).double()
    dev = device_of(backend)
    out, (h, c) = m(x.to(dev), tuple(t.to(dev) for t in hx))
    assert out.shape == (B, T, D * P) and h.shape == (L * D, B, P) and c.shape == (L * D, B, H)
    got = run(m, leaf(x, device=dev), tuple(leaf(t, device=dev) for t in hx))
    want = run(harness.stock(I, H, L, **kw).double(), leaf(x), tuple(leaf(t) for t in hx))
    compare(got, want, want, torch.float64, f"{backend} proj")


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    # A batch of no sequences: empty outputs of the right shapes, and a backward
    # that runs and gives zero parameter gradients.
    m = build(backend, I, 4, 2, bidirectional=True)
    x = leaf(torch.randn(5, 0, I), device=device_of(backend))
    out, (h, c) = m(x)
    assert out.shape == (5, 0, 8) and h.shape == c.shape == (4, 0, 4)
    (out.sum() + h.sum() + c.sum()).backward()
    assert x.grad.shape == x.shape
    for n, p in m.named_parameters():
        assert p.grad is not None and not p.grad.any(), n


def _dropout_run(m: nn.LSTM, x: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    return run(m, leaf(x), backward=False)["out"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_train_and_eval(backend):
    # Dropout acts between layers in training only; it draws from the global
    # RNG (same seed, same masks); p = 1 zeroes every input of the last layer.
    dev = device_of(backend)
    x = torch.randn(T, B, I, dtype=torch.float64, device=dev)
    m = build(backend, I, H, 3, dropout=0.4).double()
    a, b, again = _dropout_run(m, x, 0), _dropout_run(m, x, 1), _dropout_run(m, x, 0)
    assert not torch.equal(a, b) and torch.equal(a, again)
    m.eval()
    plain = harness.stock(I, H, 3, dropout=0.4).double().eval()
    want = run(plain, leaf(x.cpu()), backward=False)
    compare(run(m, leaf(x), backward=False), want, want, torch.float64, "eval")
    for p in (1.0, 0.0):  # changing the dropout attribute after construction is honoured
        m.train()
        m.dropout = plain.dropout = p
        plain.train()
        want = run(plain, leaf(x.cpu()))
        compare(run(m, leaf(x)), want, want, torch.float64, f"p={p}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_survives_pickling(backend):
    dev = device_of(backend)
    x = torch.randn(T, B, I, dtype=torch.float64, device=dev)
    m = build(backend, I, H, 2, dropout=0.5).double()
    m2 = pickle.loads(pickle.dumps(m))
    m2.flatten_parameters()
    assert m2.dropout == 0.5 and m2.training
    assert torch.equal(_dropout_run(m, x, 3), _dropout_run(m2, x, 3))
    m2.eval()
    assert torch.equal(_dropout_run(m2, x, 3), _dropout_run(m2, x, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_retain_graph_gives_the_same_gradients(backend):
    m = build(backend, I, H, L, bidirectional=True).double()
    x = leaf(torch.randn(T, B, I, dtype=torch.float64), device=device_of(backend))
    out, (h, c) = m(x)
    loss = out.sum() + h.square().sum() + c.sum()
    grads = []
    for _ in range(3):
        m.zero_grad()
        x.grad = None
        loss.backward(retain_graph=True)
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for later in grads[1:]:
        for a, b in zip(grads[0], later):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_penalty(backend, dtype):
    # d/dx and d/dW of a penalty on the input gradient (create_graph=True), as
    # in WGAN-GP or physics-informed losses: equal to nn.LSTM's.
    results = []
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 4, I, generator=g, dtype=torch.float64)
    for name, dt in (("stock", torch.float64), ("stock", dtype), (backend, dtype)):
        dev = torch.device("cpu") if name == "stock" else device_of(backend)
        m = build(name, I, H, L, batch_first=True).to(dev, dt)
        x = leaf(x0, dt, dev)
        out, _ = m(x)
        (dx,) = torch.autograd.grad(out.sin().sum(), x, create_graph=True)
        dx.square().sum().backward()
        res = {"dx": dx, "ddx": x.grad}
        res.update({"d" + n: p.grad for n, p in m.named_parameters()})
        results.append({k: v.detach().double().cpu() for k, v in res.items()})
    truth, plain, got = results
    compare(got, truth, plain, dtype, f"{backend} penalty")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16(backend):
    # Forward and gradients in bfloat16 within twice stock's own bfloat16 error.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    hx = tuple(torch.randn(L * 2, B, H, generator=g, dtype=torch.float64) for _ in range(2))
    results = []
    for name, dt in (
        ("stock", torch.float64),
        ("stock", torch.bfloat16),
        (backend, torch.bfloat16),
    ):
        dev = torch.device("cpu") if name == "stock" else device_of(backend)
        m = build(name, I, H, L, bidirectional=True).to(dev, dt)
        results.append(run(m, leaf(x, dt, dev), tuple(leaf(t, dt, dev) for t in hx)))
    truth, plain, got = results
    compare(got, truth, plain, torch.bfloat16, f"{backend} bf16")
