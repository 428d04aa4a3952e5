"""Link 4 of the chain of trust (docs/DESIGN.md): charrnn_fast.LSTM is a drop-in nn.LSTM."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import charrnn_fast
from charrnn_fast import backends


def test_same_parameters_and_init_as_nn_lstm():
    torch.manual_seed(3)
    ref = nn.LSTM(5, 7, 2, bidirectional=True)
    torch.manual_seed(3)
    ours = charrnn_fast.LSTM(5, 7, 2, bidirectional=True)
    assert isinstance(ours, nn.LSTM)
    ref_params = list(ref.named_parameters())
    our_params = list(ours.named_parameters())
    assert [n for n, _ in ref_params] == [n for n, _ in our_params]
    for (n, a), (_, b) in zip(ref_params, our_params):
        assert a.shape == b.shape and torch.equal(a, b), n


def test_state_dict_round_trips_both_ways():
    ref = nn.LSTM(4, 6, 3, bias=False, batch_first=True)
    ours = charrnn_fast.LSTM(4, 6, 3, bias=False, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    back = nn.LSTM(4, 6, 3, bias=False, batch_first=True)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 4)
    for m in (ours, back):
        torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_constructor_validation_is_nn_lstms():
    with pytest.raises(ValueError, match="dropout"):
        charrnn_fast.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size"):
        charrnn_fast.LSTM(3, 0)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        charrnn_fast.LSTM(3, 4, backend="nope")


def test_dropout_only_in_training_and_reproducible():
    torch.manual_seed(0)
    ours = charrnn_fast.LSTM(4, 8, 3, dropout=0.5, backend="cpu")
    ref = nn.LSTM(4, 8, 3, dropout=0.5)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, 4)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)
    ours.train()
    torch.manual_seed(7)
    a = ours(x)[0]
    torch.manual_seed(7)
    b = ours(x)[0]
    c = ours(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, ours.eval()(x)[0])


def test_single_layer_dropout_is_inert_like_nn_lstm():
    with pytest.warns(UserWarning, match="dropout"):
        ours = charrnn_fast.LSTM(4, 8, 1, dropout=0.5)
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(ours.train()(x)[0], ours.eval()(x)[0])


def test_backward_in_eval_mode():
    ours = charrnn_fast.LSTM(3, 5, 2).eval()
    x = torch.randn(4, 2, 3, requires_grad=True)
    ours(x)[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in ours.parameters())


def test_non_contiguous_inputs_give_correct_results():
    torch.manual_seed(0)
    ours = charrnn_fast.LSTM(6, 5, 2, backend="cpu")
    ref = nn.LSTM(6, 5, 2)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 7, 6).transpose(0, 1)  # [T=7, B=3, 6], not contiguous
    h0 = torch.randn(3, 2, 5).transpose(0, 1)
    c0 = torch.randn(2, 5, 3).permute(0, 2, 1)
    assert not (x.is_contiguous() or h0.is_contiguous() or c0.is_contiguous())
    got, (h, c) = ours(x, (h0, c0))
    want, (wh, wc) = ref(x, (h0, c0))
    for a, b in ((got, want), (h, wh), (c, wc)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_nan_propagates_like_nn_lstm():
    ours = charrnn_fast.LSTM(3, 4, backend="cpu")
    ref = nn.LSTM(3, 4)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3)
    x[1, 0, 0] = float("nan")
    got, want = ours(x)[0], ref(x)[0]
    assert torch.equal(got.isnan(), want.isnan())
    assert got[1:, 0].isnan().all() and not got[:, 1].isnan().any()


def test_empty_batch_matches_nn_lstm():
    ours = charrnn_fast.LSTM(3, 4, 2)
    out, (h, c) = ours(torch.randn(5, 0, 3))
    assert out.shape == (5, 0, 4) and h.shape == (2, 0, 4) and c.shape == (2, 0, 4)


def test_zero_length_sequence_is_a_clear_error():
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        charrnn_fast.LSTM(3, 4)(torch.randn(0, 2, 3))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_projections_and_packed_sequences_run_in_our_kernels(backend, monkeypatch):
    """proj_size > 0 and PackedSequence input reach our recurrence: neither
    nn.LSTM.forward nor ATen's LSTM is called, and the results are nn.LSTM's."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 6, 2, proj_size=2, bidirectional=True)
    ours = charrnn_fast.from_torch(ref, backend=backend)
    x = torch.randn(4, 3, 3)
    packed = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False)
    want = [ref(x), ref(packed)]

    def refuse(*args, **kwargs):
        raise AssertionError("ATen's LSTM was called")

    monkeypatch.setattr(nn.LSTM, "forward", refuse)
    monkeypatch.setattr(torch._VF, "lstm", refuse)
    got = [ours(x), ours(packed)]
    for (out, (h, c)), (out_r, (h_r, c_r)) in zip(got, want):
        if isinstance(out, PackedSequence):
            assert torch.equal(out.batch_sizes, out_r.batch_sizes)
            assert torch.equal(out.unsorted_indices, out_r.unsorted_indices)
            out, out_r = out.data, out_r.data
        for a, b in ((out, out_r), (h, h_r), (c, c_r)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_flatten_parameters_is_accepted():
    m = charrnn_fast.LSTM(3, 4)
    m.flatten_parameters()
    assert m(torch.randn(2, 1, 3))[0].shape == (2, 1, 4)


def test_functional_matches_module():
    m = charrnn_fast.LSTM(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    out, (h, c) = charrnn_fast.lstm(
        x, None, list(m.parameters()), num_layers=2, bidirectional=True, backend="reference"
    )
    want, (wh, wc) = m(x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, wc, rtol=1e-5, atol=1e-6)


def test_backend_selection(monkeypatch):
    x = torch.randn(3, 2, 4)
    m = charrnn_fast.LSTM(4, 5)
    gx = torch.empty(3, 2, 20)
    w = m.weight_hh_l0
    assert backends.select(gx, w).name == "cpu"
    monkeypatch.setenv("CHARRNN_FAST_BACKEND", "reference")
    assert backends.select(gx, w).name == "reference"
    assert backends.select(gx, w, "cpu").name == "cpu"  # the argument wins over the env
    monkeypatch.setenv("CHARRNN_FAST_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match=r"'cuda' \(from CHARRNN_FAST_BACKEND\) cannot run"):
        m(x)
    monkeypatch.setenv("CHARRNN_FAST_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"'fast' \(from CHARRNN_FAST_BACKEND\): expected one"):
        m(x)
    monkeypatch.delenv("CHARRNN_FAST_BACKEND")
    with pytest.raises(RuntimeError, match="(?i)backend 'cuda' cannot run this call: .*cuda"):
        charrnn_fast.LSTM(4, 5, backend="cuda")(x)


def test_report_lists_every_backend(capsys):
    text = backends.report()
    for name in ("reference", "cpu", "cuda"):
        assert name in text
    assert "usable" in capsys.readouterr().out


def test_autocast_runs_in_lower_precision_like_nn_lstm():
    m = charrnn_fast.LSTM(3, 8, 2, backend="cpu")
    ref = nn.LSTM(3, 8, 2)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(6, 2, 3)
    # nn.LSTM under CPU bf16 autocast runs oneDNN's bf16 LSTM primitive; CPUs
    # without bf16 support in oneDNN (a Zen 3, AVX2) refuse it ("could not
    # create a primitive descriptor"), so it is the reference only where it runs.
    onednn_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = m(x)
        if onednn_bf16:
            assert ref(x)[0].dtype == torch.bfloat16
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref(x)[0]).abs().max() < 2e-2
    # The returned bf16 state feeds the next call under autocast, as with nn.LSTM.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out2, _ = m(x, (h, c))
        if onednn_bf16:
            assert ref(x, (h, c))[0].dtype == torch.bfloat16
    assert out2.dtype == torch.bfloat16
    assert (out2.float() - ref(x, (h.float(), c.float()))[0]).abs().max() < 2e-2
