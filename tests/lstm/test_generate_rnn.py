"""rnn_lm_generate: the compiled GRU / vanilla-RNN decode loop against the
PyTorch loop, and the PyTorch loop's cells against nn.GRU / nn.RNN themselves.

Same sampler and random streams as the LSTM loop (test_generate.py), so with
the same seed both paths must give the same tokens.
"""

import pytest
import torch
from torch import nn

from charrnn_fast import generate as G

needs_compiled = pytest.mark.skipif(
    not G.compiled_available(torch.device("cpu"), torch.float32),
    reason="compiled decode loop unavailable (not built, or no AVX2 on this CPU)",
)
MODES = ["gru", "rnn_tanh", "rnn_relu"]


def module(mode: str, I: int, H: int, L: int, bias: bool) -> nn.Module:
    if mode == "gru":
        return nn.GRU(I, H, L, bias=bias)
    return nn.RNN(I, H, L, nonlinearity=mode[4:], bias=bias)


def lm(mode, L=2, H=24, V=30, E=0, bias=True, seed=0):
    """Random LM weights: (embed or None, the module's flat weights, head_w, head_b)."""
    torch.manual_seed(seed)
    rnn = module(mode, E or V, H, L, bias)
    weights = [getattr(rnn, n).detach() for n in rnn._flat_weights_names]
    embed = torch.randn(V, E) if E else None
    # Scaled so that a ReLU RNN's state neither dies nor explodes over 40 steps.
    return embed, [w * 0.6 for w in weights], torch.randn(V, H), torch.randn(V) if bias else None


def call(fn, mode, B=3, steps=40, L=2, H=24, V=30, E=0, bias=True, **kw):
    """fn(mode, tokens, h0, embed, weights, head_w, head_b, steps, sampler args...)."""
    embed, weights, hw, hb = lm(mode, L, H, V, E, bias)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(V, (B,), generator=g)
    h0 = torch.randn(L, B, H, generator=g) * 0.5
    opts = dict(temperature=1.0, top_k=0, top_p=1.0, argmax=False, seed=0, offset=0) | kw
    return fn(mode, tokens, h0, embed, weights, hw, hb, steps, *opts.values())


def python_loop(mode, tokens, h0, embed, weights, hw, hb, steps, *opts):
    """G._generate_python called as the op is: the sampler's settings, then the
    offset, by position."""
    *settings, offset = opts
    model = G._Model(embed, weights, hw, hb)
    sampler = G.SamplerOptions(*settings)
    ids, h, c = G._generate_python(tokens, h0, None, model, steps, sampler, offset, mode)
    assert c is None
    return ids, h


CASES = [
    dict(argmax=True),
    dict(seed=3, temperature=0.7),
    dict(seed=5, top_p=0.6, temperature=1.4),
    dict(seed=6, top_k=10, top_p=0.9, offset=17),
]


@needs_compiled
@pytest.mark.parametrize("kw", CASES, ids=str)
@pytest.mark.parametrize("E,bias,L", [(0, True, 2), (8, False, 3), (0, False, 1)], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_compiled_equals_python_loop(mode, kw, E, bias, L):
    ours = call(torch.ops.charrnn_fast.rnn_lm_generate, mode, E=E, bias=bias, L=L, **kw)
    ref = call(python_loop, mode, E=E, bias=bias, L=L, **kw)
    assert torch.equal(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("E", [0, 8])
@pytest.mark.parametrize("mode", MODES)
def test_python_loop_is_the_torch_module_fed_its_own_tokens(mode, E):
    # Greedy decoding, then the same tokens through nn.GRU / nn.RNN in one
    # call: its state must match, and its logits' argmax must be the tokens.
    L, H, V, B, steps = 2, 16, 20, 3, 12
    torch.manual_seed(4)
    rnn = module(mode, E or V, H, L, True)
    embed = torch.randn(V, E) if E else None
    hw, hb = torch.randn(V, H), torch.randn(V)
    weights = [getattr(rnn, n).detach() for n in rnn._flat_weights_names]
    tok = torch.tensor([1, 5, 9])
    h0 = torch.randn(L, B, H) * 0.5
    ids, h = G.rnn_lm_generate(mode, tok, h0, embed, weights, hw, hb, steps, argmax=True)
    fed = torch.cat([tok.unsqueeze(1), ids[:, :-1]], dim=1).t()  # [steps, B]
    x = embed[fed] if E else nn.functional.one_hot(fed, V).float()
    with torch.no_grad():
        y, h_ref = rnn(x, h0)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(ids.t(), (y @ hw.t() + hb).argmax(-1))


@needs_compiled
@pytest.mark.parametrize("mode", MODES)
def test_threads_own_rows_and_agree_with_one_thread(mode):
    before = torch.get_num_threads()
    kw = dict(B=7, steps=15, seed=2, top_k=12)
    try:
        torch.set_num_threads(1)
        one = call(torch.ops.charrnn_fast.rnn_lm_generate, mode, **kw)
        torch.set_num_threads(2)
        two = call(torch.ops.charrnn_fast.rnn_lm_generate, mode, **kw)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0])
    assert torch.equal(one[1], two[1])


@needs_compiled
def test_in_place_weight_updates_are_seen():
    # The packed model is reused while the weights are unchanged; an in-place
    # update (an optimizer step) must give what fresh tensors give.
    embed, weights, hw, hb = lm("gru")
    tok, h0 = torch.tensor([2, 3]), torch.zeros(2, 2, 24)
    op = torch.ops.charrnn_fast.rnn_lm_generate

    def run(ws, head_b):
        return op("gru", tok, h0, embed, ws, hw, head_b, 20, 1.0, 0, 1.0, False, 7, 0)

    first = run(weights, hb)
    assert torch.equal(run(weights, hb)[0], first[0])  # reused: same tokens
    for i, t in ((1, weights[1]), (3, weights[3])):
        t.mul_(-1.5)
        fresh = [w.clone() for w in weights]
        assert torch.equal(run(weights, hb)[1], run(fresh, hb.clone())[1]), i
    hb.add_(3.0)
    assert torch.equal(run(weights, hb)[0], run([w.clone() for w in weights], hb.clone())[0])


@needs_compiled
def test_bad_arguments_are_named():
    embed, weights, hw, hb = lm("gru")
    h = torch.zeros(2, 1, 24)
    op = torch.ops.charrnn_fast.rnn_lm_generate
    args = (torch.tensor([1]), h, embed, weights, hw, hb, 5, 1.0, 0, 1.0, False, 0, 0)
    with pytest.raises(RuntimeError, match="mode must be 'gru', 'rnn_tanh' or 'rnn_relu'"):
        op("lstm", *args)
    with pytest.raises(ValueError, match="mode must be one of"):
        G.rnn_lm_generate("lstm", *args[:7])
    with pytest.raises(
        RuntimeError,
        match=r"w_hh must be \[G \* H, H\] with G = 1 gates for this cell, got \[72, 24\]",
    ):
        op("rnn_tanh", *args)  # GRU weights (3H rows) for a 1-gate cell
    with pytest.raises(RuntimeError, match=r"tokens\[0\] = 30 is outside the vocabulary"):
        op("gru", torch.tensor([30]), *args[1:])
    with pytest.raises(RuntimeError, match="weights must hold 4 tensors per layer"):
        op("gru", args[0], h, embed, weights[:3], *args[4:])
    with pytest.raises(RuntimeError, match="temperature must be > 0"):
        op("gru", *args[:7], 0.0, *args[8:])


@needs_compiled
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("mode,H", [("gru", 272), ("rnn_tanh", 320)])
def test_threads_sharing_rows_of_a_large_model(mode, H, B):
    # Weights beyond 1 MB with few rows: the threads split the units of every
    # gate and meet per layer (csrc/cpu/generate_rnn.cpp).
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    kw = dict(B=B, steps=12, L=2, H=H, V=40, seed=5, top_k=20)
    try:
        ours = call(torch.ops.charrnn_fast.rnn_lm_generate, mode, **kw)
        embedded = call(torch.ops.charrnn_fast.rnn_lm_generate, mode, E=16, **kw)
    finally:
        torch.set_num_threads(before)
    for got, E in ((ours, 0), (embedded, 16)):
        ref = call(python_loop, mode, E=E, **kw)
        assert torch.equal(got[0], ref[0])
        torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_chunks_give_the_eager_loops_tokens_and_state(monkeypatch, mode):
    embed, weights, hw, hb = lm(mode)
    dev = [w.cuda() for w in (*weights, hw, hb)]
    g = torch.Generator().manual_seed(2)
    tok = torch.randint(30, (3,), generator=g).cuda()
    h0 = torch.randn(2, 3, 24, generator=g).cuda() * 0.5
    steps = 2 * G.GRAPH_CHUNK + 7  # graphed chunks, then an eager tail
    args = (mode, tok, h0, None, dev[:-2], dev[-2], dev[-1], steps)
    graphed = G.rnn_lm_generate(*args, offset=11, seed=4, top_k=9)
    monkeypatch.setattr(G, "GRAPH_CHUNK", 10**9)  # eager: one step per Python iteration
    eager = G.rnn_lm_generate(*args, offset=11, seed=4, top_k=9)
    assert torch.equal(graphed[0], eager[0])
    torch.testing.assert_close(graphed[1], eager[1], rtol=0, atol=0)
    cpu = G.rnn_lm_generate(mode, tok.cpu(), h0.cpu(), None, weights, hw, hb, 20, argmax=True)
    assert torch.equal(cpu[0], G.rnn_lm_generate(*args[:7], 20, argmax=True)[0].cpu())


@needs_compiled
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_no_rows_and_empty_sizes(mode):
    # B = 0 returns empty results (it used to reach a kernel that divides by
    # the row count); H = 0 or V = 0 is refused with a message, not a crash.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for H in (24, 320):  # rows owned by threads; a team sharing the units
            embed, weights, hw, hb = lm(mode if mode != "lstm" else "gru", H=H)
            if mode == "lstm":
                rnn = nn.LSTM(30, H, 2)
                weights = [getattr(rnn, n).detach() for n in rnn._flat_weights_names]
            tok, h = torch.zeros(0, dtype=torch.long), torch.zeros(2, 0, H)
            if mode == "lstm":
                out = G.lstm_lm_generate(tok, h, h, None, weights, hw, hb, 5)
                assert out[2].shape == (2, 0, H)
            else:
                out = G.rnn_lm_generate(mode, tok, h, None, weights, hw, hb, 5)
            assert out[0].shape == (0, 5) and out[1].shape == (2, 0, H)
    finally:
        torch.set_num_threads(before)
    op = torch.ops.charrnn_fast.rnn_lm_generate
    empty = torch.zeros(2, 1, 0)
    with pytest.raises(RuntimeError, match="hidden size and vocabulary must be >= 1"):
        op("gru", torch.tensor([0]), empty, None, [torch.zeros(0, 3), torch.zeros(0, 0)],
           torch.zeros(3, 0), None, 5, 1.0, 0, 1.0, False, 0, 0)  # fmt: skip
