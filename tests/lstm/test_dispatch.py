"""The measured CPU dispatch (charrnn_fast/backends/dispatch.py): who serves a
call, ATen's fused LSTM or our kernels, decided by timing both on this machine,
remembered in the process and in a cache file; its switches."""

import json

import pytest
import torch
from torch import nn

import charrnn_fast
from charrnn_fast.backends import dispatch


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """Measured dispatch with an empty cache folder of its own."""
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", "auto")
    monkeypatch.setenv("CHARRNN_FAST_CACHE_DIR", str(tmp_path))
    dispatch.forget()
    yield tmp_path
    dispatch.forget()


def _fake(seconds: dict[str, float]):
    """A clock and two calls that advance it by fixed amounts: timings without timing."""
    now = [0.0]
    calls = {"aten": 0, "ours": 0}

    def side(name):
        def run():
            calls[name] += 1
            now[0] += seconds[name]

        return run

    return (lambda: now[0]), side("aten"), side("ours"), calls


@pytest.mark.parametrize(
    "aten,ours,choice", [(1.0, 0.5, "ours"), (1.0, 1.5, "aten"), (1.0, 0.99, "aten")]
)
def test_measure_picks_ours_only_when_clearly_faster(aten, ours, choice):
    clock, run_aten, run_ours, calls = _fake({"aten": aten, "ours": ours})
    d = dispatch.measure(run_aten, run_ours, clock=clock)
    assert d.choice == choice  # a tie (within MARGIN) goes to ATen, i.e. nn.LSTM
    assert d.ratio == pytest.approx(ours / aten)
    # Bounded: one warm-up call each, then at least MIN_ROUNDS and, past the
    # time budget, no more rounds.
    assert dispatch.MIN_ROUNDS <= d.rounds <= dispatch.MAX_ROUNDS
    assert calls["aten"] == calls["ours"] == d.rounds + 1
    assert (d.rounds - 1) * (aten + ours) < dispatch.BUDGET_S or d.rounds == dispatch.MIN_ROUNDS


def test_short_calls_get_more_rounds_within_the_budget():
    clock, run_aten, run_ours, _ = _fake({"aten": 0.01, "ours": 0.005})
    assert dispatch.measure(run_aten, run_ours, clock=clock).rounds == dispatch.MAX_ROUNDS


def test_an_aten_failure_hands_the_call_to_ours_and_says_why():
    def broken():
        raise RuntimeError("could not create a primitive descriptor")

    d = dispatch.measure(broken, lambda: None)
    assert d.choice == "ours" and "primitive descriptor" in d.why


def test_our_failure_hands_the_call_to_aten_and_says_why():
    def broken():
        raise RuntimeError("no kernel for this")

    d = dispatch.measure(lambda: None, broken)
    assert d.choice == "aten" and "no kernel for this" in d.why


def test_a_decision_is_kept_on_disk_and_reused_without_measuring(fresh):
    key = dispatch.Key.of(50, 32, 8, 16, 0, 1, 1, torch.float32, True, False)
    clock, run_aten, run_ours, _ = _fake({"aten": 1.0, "ours": 0.5})
    d = dispatch.measure(run_aten, run_ours, clock=clock)
    dispatch._save(key, d)
    dispatch.forget()  # a new process: only the file remembers

    def never():
        raise AssertionError("measured again despite the cache")

    assert dispatch.decide(key, never).choice == "ours"
    data = json.loads(dispatch.cache_path().read_text())
    assert data["machine"]["torch"] == torch.__version__
    assert key.text() in data["entries"]


def test_a_corrupt_cache_file_is_measured_again_and_rewritten(fresh):
    path = dispatch.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    key = dispatch.Key.of(5, 3, 4, 4, 0, 1, 1, torch.float32, False, False)
    clock, run_aten, run_ours, calls = _fake({"aten": 1.0, "ours": 2.0})
    assert dispatch.decide(key, lambda: (run_aten, run_ours)).choice in ("aten", "ours")
    assert calls["aten"] > 0
    assert key.text() in json.loads(path.read_text())["entries"]


def test_keys_bucket_lengths_and_batches_and_name_what_decides():
    a = dispatch.Key.of(50, 33, 8, 16, 0, 2, 1, torch.bfloat16, True, False)
    b = dispatch.Key.of(64, 64, 8, 16, 0, 2, 1, torch.bfloat16, True, False)
    assert a == b  # within a power of two
    assert a != dispatch.Key.of(65, 64, 8, 16, 0, 2, 1, torch.bfloat16, True, False)
    assert a != dispatch.Key.of(64, 64, 8, 16, 0, 2, 1, torch.float32, True, False)
    assert a != dispatch.Key.of(64, 64, 8, 16, 0, 2, 1, torch.bfloat16, False, False)
    assert "dtype=bfloat16" in a.text() and f"threads={torch.get_num_threads()}" in a.text()


@pytest.mark.parametrize("value", ["garbage", "ATEN", ""])
def test_unknown_mode_is_an_error_that_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", value)
    m = charrnn_fast.LSTM(3, 4)
    with pytest.raises(ValueError, match="CHARRNN_FAST_DISPATCH must be one of auto, aten, ours"):
        m(torch.randn(2, 1, 3))


@pytest.mark.parametrize("old", ["CHARRNN_FAST_CPU_TRAIN", "CHARRNN_FAST_CPU_FORWARD"])
def test_removed_variables_are_named_not_ignored(monkeypatch, old):
    monkeypatch.setenv(old, "ours")
    with pytest.raises(ValueError, match=f"{old} is no longer read.*CHARRNN_FAST_DISPATCH"):
        charrnn_fast.LSTM(3, 4)(torch.randn(2, 1, 3))


@pytest.mark.parametrize("grad", [False, True])
def test_auto_measures_once_per_kind_and_matches_nn_lstm(fresh, grad):
    torch.manual_seed(0)
    ref = nn.LSTM(6, 10, 2)
    ours = charrnn_fast.from_torch(ref)
    x = torch.randn(7, 3, 6, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        got = ours(x)[0]
        torch.testing.assert_close(got, ref(x)[0], rtol=1e-5, atol=1e-6)
    lines = dispatch.report_lines()
    assert len(lines) == 2 and f"grad={grad}" in lines[1]  # one kind of call, one decision
    # Same kind again (T and B in the same buckets): no new decision.
    with torch.set_grad_enabled(grad):
        ours(torch.randn(8, 4, 6, requires_grad=grad))
    assert len(dispatch.report_lines()) == 2
    assert "CHARRNN_FAST_DISPATCH=auto" in charrnn_fast.backends.report()


def test_measuring_leaves_the_callers_rng_and_gradients_alone(fresh):
    torch.manual_seed(0)
    m = charrnn_fast.LSTM(4, 5, dropout=0.0)
    x = torch.randn(6, 2, 4)
    state = torch.get_rng_state()
    m(x)[0].sum().backward()
    assert torch.equal(torch.get_rng_state(), state)
    grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m(x)[0].sum().backward()  # decided now: no probe calls, same gradients
    for a, p in zip(grads, m.parameters()):
        torch.testing.assert_close(p.grad, a)


@pytest.mark.parametrize("mode", ["aten", "ours"])
def test_forced_modes(monkeypatch, mode):
    torch.manual_seed(0)
    ref = nn.LSTM(6, 10, 2)
    ours = charrnn_fast.from_torch(ref).eval()
    x = torch.randn(7, 3, 6)
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", mode)
    with torch.no_grad():
        got = ours(x)[0]
        want = ref(x)[0]
    # ATen: the very call nn.LSTM makes, bit for bit; ours: as close, other bits.
    assert torch.equal(got, want) is (mode == "aten")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_eval_mode_with_gradients_on_aten_still_differentiates(monkeypatch):
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", "aten")
    torch.manual_seed(0)
    ref = nn.LSTM(6, 10, 2)
    ours = charrnn_fast.from_torch(ref).eval()
    x = torch.randn(7, 3, 6)
    xg = x.clone().requires_grad_()
    ours(xg)[0].sum().backward()
    ref_x = x.clone().requires_grad_()
    ref.train()(ref_x)[0].sum().backward()
    torch.testing.assert_close(xg.grad, ref_x.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "var,value,message",
    [
        ("CHARRNN_FAST_PATH", "garbage", "CHARRNN_FAST_PATH must be a comma list"),
        (
            "CHARRNN_FAST_CUDA_PATH",
            "stepwise",
            "no longer read; set CHARRNN_FAST_PATH=cuda:stepwise",
        ),
        ("CHARRNN_FAST_BACKEND", "garbage", "unknown backend 'garbage' .from CHARRNN_FAST_BACKEND"),
        ("CHARRNN_FAST_BACKEND", "cuda", "backend 'cuda' .from CHARRNN_FAST_BACKEND. cannot run"),
    ],
)
def test_variables_that_steer_the_choice_are_checked_on_the_cpu_too(
    monkeypatch, var, value, message
):
    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda is a valid choice for CUDA tensors only")
    monkeypatch.setenv(var, value)
    with pytest.raises((ValueError, RuntimeError), match=message):
        charrnn_fast.LSTM(3, 4)(torch.randn(2, 1, 3))


@pytest.mark.parametrize("how", ["autocast", "params"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_calls_are_measured_in_their_dtype(fresh, how, dtype):
    """Under autocast and with low-precision parameters alike, the call is keyed
    and measured in the low dtype (ATen's oneDNN kernels there differ from its
    fp32 ones), and the result stays nn.LSTM's within that dtype's rounding."""
    torch.manual_seed(0)
    ref = nn.LSTM(8, 16, 2)
    ours = charrnn_fast.from_torch(ref)
    x = torch.randn(6, 4, 8)
    if how == "params":
        ref, ours, x = ref.to(dtype), ours.to(dtype), x.to(dtype)
    with torch.autocast("cpu", dtype=dtype, enabled=how == "autocast"):
        got = ours(x)[0]
    # nn.LSTM under fp16 autocast fails on some CPUs (no fp16 oneDNN LSTM; ours
    # serves it then): the truth is its run with parameters cast, which autocast means.
    want = ref.to(dtype)(x.to(dtype))[0]
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=0.05)
    decisions = dispatch.report_lines()[1:]
    assert len(decisions) == 1 and f"dtype={str(dtype).removeprefix('torch.')}" in decisions[0]
