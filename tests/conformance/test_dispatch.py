"""The module under test is ours, and its calls reach our kernels: no call on a
backend pinned to our kernels may go to stock nn.LSTM's forward, to
torch._VF.lstm / torch.lstm, or to ATen's fused RNN ops (oneDNN, cuDNN)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import charrnn_fast
from tests.conformance import harness, torch_db
from tests.conformance.harness import BACKENDS, PACKED, PINNED, build, device_of, leaf, run


class _AtenRNNOps(TorchDispatchMode):
    """Records ATen's fused RNN ops (mkldnn_rnn_layer, _cudnn_rnn, ...) as they run."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith("aten.") and ("rnn" in name or "lstm" in name):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def stock_calls(monkeypatch) -> Iterator[list[str]]:
    """The list of stock LSTM code paths run while the test runs."""
    calls: list[str] = []

    def spy(label, fn):
        def wrapped(*args, **kwargs):
            calls.append(label)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(nn.LSTM, "forward", spy("nn.LSTM.forward", nn.LSTM.forward))
    monkeypatch.setattr(torch._VF, "lstm", spy("torch._VF.lstm", torch._VF.lstm))
    monkeypatch.setattr(torch, "lstm", spy("torch.lstm", torch.lstm))
    with _AtenRNNOps(calls):
        yield calls


@pytest.fixture
def our_forward_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    forward = charrnn_fast.LSTM.forward

    def spy(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(charrnn_fast.LSTM, "forward", spy)
    return calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_under_test_is_ours(backend, our_forward_calls):
    # Fails if the harness ever hands the checks stock nn.LSTM in place of ours
    # (or, for the baseline, ours in place of stock).
    m = build(backend, 3, 4, 2)
    x = torch.randn(5, 2, 3, device=device_of(backend))
    m(x)
    if backend == "stock":
        assert type(m) is nn.LSTM and not our_forward_calls
    else:
        assert isinstance(m, charrnn_fast.LSTM) and type(m).forward is not nn.LSTM.forward
        assert our_forward_calls == [1]


@pytest.mark.parametrize("backend", ["stock"])
def test_spy_sees_stock_lstm(backend, stock_calls):
    # The baseline: the spy of the checks below does catch nn.LSTM's code.
    m = build(backend, 3, 4, 2, proj_size=2)
    run(m, leaf(torch.randn(5, 2, 3)))
    assert "nn.LSTM.forward" in stock_calls and "torch._VF.lstm" in stock_calls


def _assert_ours_only(calls: list[str]) -> None:
    assert not calls, f"the call reached stock LSTM code: {sorted(set(calls))}"


@pytest.mark.parametrize("case", torch_db.CASE_IDS)
@pytest.mark.parametrize("backend", PINNED)
def test_module_db_reaches_our_kernels(backend, case, stock_calls):
    if torch_db.INFO is None:
        pytest.skip(torch_db.MISSING)
    mi = torch_db.samples(torch.float32)[case]
    m = build(backend, *mi.constructor_input.args, **mi.constructor_input.kwargs)
    dev = device_of(backend)
    x, *hx = mi.forward_input.args
    hx = tuple(leaf(t, device=dev) for t in hx[0]) if hx else None
    run(m, leaf(x, device=dev), hx)
    _assert_ours_only(stock_calls)


@pytest.mark.parametrize("case", list(PACKED))
@pytest.mark.parametrize("backend", PINNED)
def test_packed_reaches_our_kernels(backend, case, stock_calls):
    kw, x, packed, hx = harness.packed_inputs(case, torch.float32, device_of(backend))
    m = build(backend, *harness.PACKED_SIZES, **kw)
    run(m, packed, hx, x_leaf=x)
    _assert_ours_only(stock_calls)


@pytest.mark.parametrize("kw", [{"proj_size": 2}, {"proj_size": 3, "bidirectional": True,
                                                    "batch_first": True}], ids=["uni", "bi_bf"])  # fmt: skip
@pytest.mark.parametrize("backend", PINNED)
def test_proj_size_reaches_our_kernels(backend, kw, stock_calls):
    m = build(backend, 3, 4, 2, **kw)
    run(m, leaf(torch.randn(5, 2, 3, device=device_of(backend))))
    _assert_ours_only(stock_calls)


def test_known_failures_name_real_checks_and_backends():
    # An entry with a misspelt check or backend would match nothing and hide nothing.
    import importlib
    import pkgutil

    from tests.conformance import conftest

    package = importlib.import_module("tests.conformance")
    checks = set()
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"tests.conformance.{info.name}")
            checks |= {n for n in dir(module) if n.startswith("test_")}
    names = {getattr(b, "values", (b,))[0] for b in BACKENDS}
    for check, backend, pattern in conftest.KNOWN_FAILURES:
        assert check in checks, check
        assert backend in names and backend != "stock", backend
        assert pattern, (check, backend)
