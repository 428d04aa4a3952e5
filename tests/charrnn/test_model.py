"""CharRNN: shapes, state carrying, the LSTM it is built on, init, autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from charrnn_fast import LSTM
from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.model import CharRNN, build_model, detach_state, lm_loss

V, B, T = 13, 3, 8


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding_dim", [0, 6])
def test_shapes_and_state(model, embedding_dim):
    torch.manual_seed(0)
    m = CharRNN(V, rnn_size=16, num_layers=2, model=model, embedding_dim=embedding_dim)
    idx = torch.randint(V, (B, T))
    logits, state = m(idx)
    assert logits.shape == (T, B, V)  # time-major
    assert len(state) == (2 if model == "lstm" else 1)
    assert all(s.shape == (2, B, 16) for s in state)
    if model == "lstm":
        assert isinstance(m.rnn, LSTM)
    loss = lm_loss(logits, torch.randint(V, (B, T)))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_carrying_state_across_chunks_equals_one_long_pass(model):
    # The premise of truncated BPTT: two chunks with the state carried give the
    # same outputs as one pass over the whole sequence.
    torch.manual_seed(1)
    m = CharRNN(V, rnn_size=12, num_layers=2, model=model).double().eval()
    idx = torch.randint(V, (B, 2 * T))
    whole, _ = m(idx)
    first, state = m(idx[:, :T])
    second, _ = m(idx[:, T:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=1e-12)


def test_logits_predict_the_next_token_of_each_row():
    # Row b's logits must depend only on row b's inputs (no mixing of batch rows
    # through the transposes).
    torch.manual_seed(2)
    m = CharRNN(V, rnn_size=8, num_layers=1).double().eval()
    idx = torch.randint(V, (B, T))
    logits, _ = m(idx)
    alone, _ = m(idx[1:2])
    torch.testing.assert_close(logits[:, 1:2], alone, rtol=0, atol=1e-12)


def test_char_rnn_init_and_forget_bias():
    m = CharRNN(V, rnn_size=10, num_layers=2)
    for name, p in m.named_parameters():
        if "bias_ih" in name:
            assert torch.all(p[10:20] == 1.0)  # forget gate: remember by default
            assert p[:10].abs().max() <= 0.08
        elif "bias_hh" in name:
            assert torch.all(p[10:20] == 0.0)
        else:
            assert p.abs().max() <= 0.08


def test_backend_reaches_the_lstm_and_state_dict_matches_nn_lstm():
    m = CharRNN(V, rnn_size=8, num_layers=2, backend="reference")
    assert m.rnn.backend == "reference"
    ref = nn.LSTM(V, 8, 2)
    assert m.rnn.state_dict().keys() == ref.state_dict().keys()
    rebuilt = build_model(m.config(), backend="cpu")
    rebuilt.load_state_dict(m.state_dict())
    idx = torch.randint(V, (B, T))
    torch.testing.assert_close(rebuilt(idx)[0], m.eval()(idx)[0], rtol=1e-5, atol=1e-6)


def test_dropout_is_active_only_in_training():
    torch.manual_seed(3)
    m = CharRNN(V, rnn_size=16, num_layers=2, dropout=0.5)
    idx = torch.randint(V, (B, T))
    a, b = m(idx)[0], m(idx)[0]
    assert not torch.equal(a, b)
    m.eval()
    assert torch.equal(m(idx)[0], m(idx)[0])


def test_bf16_autocast_keeps_the_carried_state_in_fp32():
    torch.manual_seed(4)
    m = CharRNN(V, rnn_size=16, num_layers=2)
    idx = torch.randint(V, (B, T))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = m(idx)
        logits2, state2 = m(idx, state)  # the carried state must be accepted
    assert logits.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in state + state2)
    ref, _ = m(idx)
    assert (logits.float() - ref).abs().max() < 0.1  # bf16-level agreement
    lm_loss(logits2, idx).backward()


def test_bad_arguments():
    with pytest.raises(UserError, match="unknown model"):
        CharRNN(V, model="transformer")
    with pytest.raises(UserError, match="dropout"):
        CharRNN(V, dropout=1.0)
