"""Generic checks driven by the installed torch's module_db entry for nn.LSTM:
each of its sample inputs through our module on every backend, compared with
stock nn.LSTM (forward, gradients, double gradients, batched gradients,
pickling, state_dict, non-contiguous inputs, factory kwargs), and its error
inputs. Stock nn.LSTM runs the same checks as the baseline."""

from __future__ import annotations

import copy
import functools
import io
import pickle

import pytest
import torch
from torch import Tensor, nn

import charrnn_fast
from tests.conformance import harness, torch_db
from tests.conformance.harness import BACKENDS, build, compare, device_of, leaf, run

DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
# The second-order checks, the suite's costliest, on the samples that pass hx
# (a missing hx is zeros: the forward and gradient checks cover that path).
WITH_HX = [c for c in torch_db.CASE_IDS if not c.endswith("-nohx")]


@functools.cache
def _samples() -> dict:
    return torch_db.samples(torch.float64)


def _case(case: str):
    """(constructor args, kwargs, x, hx or None, reference_fn) of a module_db sample,
    tensors in float64 on the CPU."""
    if torch_db.INFO is None:
        pytest.skip(torch_db.MISSING)
    mi = _samples()[case]
    fwd = mi.forward_input.args
    hx = fwd[1] if len(fwd) > 1 else None
    kw = mi.constructor_input.kwargs
    return mi.constructor_input.args, kw, fwd[0], hx, mi.reference_fn


def _leaves(x: Tensor, hx, dtype, device) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    hx = None if hx is None else (leaf(hx[0], dtype, device), leaf(hx[1], dtype, device))
    return leaf(x, dtype, device), hx


def _stock_runs(args, kw, x, hx, dtype, backward: bool, training: bool = True):
    """(truth, plain): stock nn.LSTM on the CPU in float64 and in `dtype`."""
    out = []
    for dt in (torch.float64, dtype):
        m = harness.stock(*args, **kw).to(dt).train(training)
        out.append(run(m, *_leaves(x, hx, dt, "cpu"), backward=backward))
    return out


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward(backend, case, dtype, mode):
    args, kw, x, hx, reference_fn = _case(case)
    training = mode == "train"
    m = build(backend, *args, **kw).to(dtype).train(training)
    dev = device_of(backend)
    with torch.no_grad():
        got = run(m, *_leaves(x, hx, dtype, dev), backward=False)
    truth, plain = _stock_runs(args, kw, x, hx, dtype, backward=False, training=training)
    compare(got, truth, plain, dtype, f"{backend} {case}")
    # module_db's reference: the same call with a batch of one, squeezed
    # (ModuleInput passes the module's parameters itself).
    xs, hxs = _leaves(x, hx, dtype, dev)
    want = reference_fn(m, *((xs,) if hxs is None else (xs, hxs)))
    out, (h, c) = m(xs, hxs)
    for a, b in zip((out, h, c), (want[0], *want[1])):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients(backend, case, dtype):
    args, kw, x, hx, _ = _case(case)
    m = build(backend, *args, **kw).to(dtype)
    got = run(m, *_leaves(x, hx, dtype, device_of(backend)))
    truth, plain = _stock_runs(args, kw, x, hx, dtype, backward=True)
    compare(got, truth, plain, dtype, f"{backend} {case}")


def _as_function(m: nn.LSTM, with_hx: bool):
    """f(x, [h0, c0,] *parameters) -> (out, h_n, c_n), and the parameters as leaves."""
    names = [n for n, _ in m.named_parameters()]

    def f(x, *rest):
        hx, ws = (tuple(rest[:2]), rest[2:]) if with_hx else (None, rest)
        out, (h, c) = torch.func.functional_call(m, dict(zip(names, ws)), (x, hx))
        return out, h, c

    return f, [leaf(p) for p in m.parameters()]


@pytest.mark.parametrize("case", WITH_HX)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradgradcheck(backend, case):
    args, kw, x, hx, _ = _case(case)
    m = build(backend, *args, **kw).double()
    f, ws = _as_function(m, hx is not None)
    xs, hxs = _leaves(x, hx, torch.float64, device_of(backend))
    inputs = [xs, *(hxs or ()), *ws]
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize("case", WITH_HX)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_gradients(backend, case):
    # check_batched_grad: the backward run under vmap (torch.func), as
    # Jacobians, Hessians and per-sample gradients do.
    args, kw, x, hx, _ = _case(case)
    m = build(backend, *args, **kw).double()
    f, ws = _as_function(m, hx is not None)
    xs, hxs = _leaves(x, hx, torch.float64, device_of(backend))
    inputs = [xs, *(hxs or ()), *ws]
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True, check_batched_grad=True)


@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_pickle_and_deepcopy(backend, case):
    args, kw, x, hx, _ = _case(case)
    m = build(backend, *args, **kw).double()
    dev = device_of(backend)
    want = run(m, *_leaves(x, hx, torch.float64, dev))
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(other) is type(m)
        assert getattr(other, "backend", None) == getattr(m, "backend", None)
        got = run(other, *_leaves(x, hx, torch.float64, dev))
        for k in want:
            assert torch.equal(got[k], want[k]), k
    # The state_dict through torch.save / torch.load(weights_only=True).
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = build(backend, *args, seed=1, **kw).double()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    got = run(fresh, *_leaves(x, hx, torch.float64, dev))
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_both_ways(backend, case):
    args, kw, x, hx, _ = _case(case)
    ours = build(backend, *args, seed=0, **kw).double()
    other = harness.stock(*args, seed=1, **kw).double()
    assert list(ours.state_dict()) == list(other.state_dict())
    # ours -> stock: the stock module then computes what ours did.
    other.load_state_dict(ours.state_dict())
    mine = run(ours, *_leaves(x, hx, torch.float64, device_of(backend)))
    theirs = run(other, *_leaves(x, hx, torch.float64, "cpu"))
    compare(mine, theirs, theirs, torch.float64, f"ours->stock {backend} {case}")
    # stock -> ours: a module of another seed takes the stock weights.
    again = build(backend, *args, seed=2, **kw).double()
    again.load_state_dict(other.state_dict())
    compare(run(again, *_leaves(x, hx, torch.float64, device_of(backend))), theirs, theirs,
            torch.float64, f"stock->ours {backend} {case}")  # fmt: skip


def _noncontiguous(t: Tensor, layout: str) -> Tensor:
    """A leaf equal to t whose strides are not contiguous."""
    if layout == "strided":  # every other element of a buffer twice as large
        buf = torch.zeros(*t.shape, 2, dtype=t.dtype, device=t.device)
        v = buf[..., 1]
        v.copy_(t)
    else:  # "transposed": the first two dimensions swapped in memory
        v = t.transpose(0, 1).contiguous().transpose(0, 1)
    assert not v.is_contiguous() and torch.equal(v, t)
    return v.detach().requires_grad_()


@pytest.mark.parametrize("layout", ["strided", "transposed"])
@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_inputs(backend, case, layout):
    args, kw, x, hx, _ = _case(case)
    m = build(backend, *args, **kw).double()
    dev = device_of(backend)
    want = run(m, *_leaves(x, hx, torch.float64, dev))
    xs = _noncontiguous(x.double().to(dev), layout)
    hxs = None if hx is None else tuple(_noncontiguous(t.double().to(dev), layout) for t in hx)
    got = run(m, xs, hxs)
    compare(got, want, want, torch.float64, f"{backend} {case} {layout}")


@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_factory_kwargs(backend, case):
    args, kw, x, hx, _ = _case(case)
    dev = device_of(backend)
    factory = {"device": dev, "dtype": torch.float64}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(3)  # seeds the device's generator too: init runs there
        if backend == "stock":
            m = nn.LSTM(*args, **kw, **factory)
        else:
            m = charrnn_fast.LSTM(*args, backend=harness._BACKEND_ARG[backend], **kw, **factory)
    for n, p in m.named_parameters():
        assert p.dtype == torch.float64 and p.device.type == dev.type, n
    # Built in place with the factory kwargs, the weights are stock's own init.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(3)
        truth = nn.LSTM(*args, **kw, **factory)
    for (n, p), q in zip(m.named_parameters(), truth.parameters()):
        assert torch.equal(p, q), n
    want = run(truth.cpu(), *_leaves(x, hx, torch.float64, "cpu"))
    compare(run(m, *_leaves(x, hx, torch.float64, dev)), want, want, torch.float64, backend)


def _error_case(err: str, device: torch.device):
    if torch_db.INFO is None:
        pytest.skip(torch_db.MISSING)
    return torch_db.error_samples(str(device))[err]


def _make(backend: str, *args, **kwargs) -> nn.LSTM:
    if backend == "stock":
        return nn.LSTM(*args, **kwargs)
    return charrnn_fast.LSTM(*args, backend=harness._BACKEND_ARG[backend], **kwargs)


@pytest.mark.parametrize("err", torch_db.ERROR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_error_inputs(backend, err):
    e = _error_case(err, device_of(backend))
    mi = e.module_error_input
    ci = mi.constructor_input
    if e.error_on.name == "CONSTRUCTION_ERROR":
        with pytest.raises(e.error_type, match=e.error_regex):
            _make(backend, *ci.args, **ci.kwargs)
        return
    m = _make(backend, *ci.args, **ci.kwargs).to(device_of(backend))
    with pytest.raises(e.error_type, match=e.error_regex):
        m(*mi.forward_input.args, **mi.forward_input.kwargs)
