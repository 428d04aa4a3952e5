"""lstm_lm_generate: the compiled decode loop against the PyTorch loop, and its sampler.

The compiled op (CPU, fp32) and the Python loop implement the same rule
(csrc/cpu/sampler.h), so with the same seed they must give the same tokens
(the logits differ only by rounding, far from any decision boundary at these
sizes); the sampler itself is checked against softmax(logits / T).
"""

import math

import pytest
import torch
from torch import nn

from charrnn_fast import generate as G

needs_compiled = pytest.mark.skipif(
    not G.compiled_available(torch.device("cpu"), torch.float32),
    reason="compiled decode loop unavailable (not built, or no AVX2 on this CPU)",
)


def lm(L=2, H=24, V=30, E=0, bias=True, seed=0):
    """Random LM weights: (embed or None, flat LSTM weights, head_w, head_b)."""
    torch.manual_seed(seed)
    lstm = nn.LSTM(E or V, H, L, bias=bias)
    weights = [getattr(lstm, n).detach() for n in lstm._flat_weights_names]
    embed = torch.randn(V, E) if E else None
    return embed, weights, torch.randn(V, H), torch.randn(V) if bias else None


def python_loop(tokens, h0, c0, embed, weights, head_w, head_b, steps, *opts):
    """G._generate_python called as the op is: the sampler's settings, then the
    offset, by position."""
    *settings, offset = opts
    model = G._Model(embed, weights, head_w, head_b)
    return G._generate_python(tokens, h0, c0, model, steps, G.SamplerOptions(*settings), offset)


def call(fn, B=3, steps=40, L=2, H=24, V=30, E=0, bias=True, offset=0, **settings):
    """fn on a random model: the op and python_loop take the sampler's settings
    by position, lstm_lm_generate by keyword."""
    embed, weights, hw, hb = lm(L, H, V, E, bias)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(V, (B,), generator=g)
    h0 = torch.randn(L, B, H, generator=g) * 0.5
    c0 = torch.randn(L, B, H, generator=g) * 0.5
    args = (tokens, h0, c0, embed, weights, hw, hb, steps)
    if fn is G.lstm_lm_generate:
        return fn(*args, offset=offset, **settings)
    opts = dict(temperature=1.0, top_k=0, top_p=1.0, argmax=False, seed=0) | settings
    return fn(*args, *opts.values(), offset)


CASES = [
    dict(argmax=True),
    dict(seed=3, temperature=0.7),
    dict(seed=4, top_k=4),
    dict(seed=5, top_p=0.6, temperature=1.4),
    dict(seed=6, top_k=10, top_p=0.9),
]


@needs_compiled
@pytest.mark.parametrize("kw", CASES, ids=str)
@pytest.mark.parametrize("E,bias,L", [(0, True, 2), (8, False, 3), (0, False, 1)], ids=str)
def test_compiled_equals_python_loop(kw, E, bias, L):
    ours = call(torch.ops.charrnn_fast.lstm_lm_generate, E=E, bias=bias, L=L, **kw)
    ref = call(python_loop, E=E, bias=bias, L=L, **kw)
    assert torch.equal(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours[2], ref[2], rtol=0, atol=1e-5)


@needs_compiled
@pytest.mark.parametrize("B", [1, 3])
def test_threads_sharing_rows_of_a_large_model(B):
    # Weights beyond 1 MB with few rows: the threads split the units (csrc/cpu/generate.cpp).
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kw = dict(B=B, steps=12, L=2, H=272, V=40, seed=5, top_k=20)
        ours = call(torch.ops.charrnn_fast.lstm_lm_generate, **kw)
    finally:
        torch.set_num_threads(before)
    ref = call(python_loop, **kw)
    assert torch.equal(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fn", ["compiled", "python"])
def test_same_seed_same_tokens_however_split(fn):
    if fn == "compiled" and not G.compiled_available(torch.device("cpu"), torch.float32):
        pytest.skip("compiled decode loop unavailable")
    op = torch.ops.charrnn_fast.lstm_lm_generate if fn == "compiled" else python_loop
    embed, weights, hw, hb = lm()
    tok, h, c = torch.tensor([3, 7]), torch.zeros(2, 2, 24), torch.zeros(2, 2, 24)
    whole = op(tok, h, c, embed, weights, hw, hb, 30, 1.0, 0, 1.0, False, 11, 0)
    assert torch.equal(
        whole[0], op(tok, h, c, embed, weights, hw, hb, 30, 1.0, 0, 1.0, False, 11, 0)[0]
    )
    first = op(tok, h, c, embed, weights, hw, hb, 12, 1.0, 0, 1.0, False, 11, 0)
    rest = op(
        first[0][:, -1], first[1], first[2], embed, weights, hw, hb, 18, 1.0, 0, 1.0, False, 11, 12
    )
    assert torch.equal(torch.cat([first[0], rest[0]], dim=1), whole[0])
    other = op(tok, h, c, embed, weights, hw, hb, 30, 1.0, 0, 1.0, False, 12, 0)
    assert not torch.equal(other[0], whole[0])


def _chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test (Wilson-Hilferty normal approximation)."""
    n = counts.sum().item()
    keep = probs > 0
    expected = probs[keep] * n
    chi2 = ((counts[keep] - expected) ** 2 / expected).sum().item()
    k = int(keep.sum()) - 1
    z = ((chi2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize("T", [1.0, 0.6])
def test_next_token_distribution_is_softmax_of_logits_over_T(compiled, T):
    # Many rows from one state: each row's first sample is an independent draw.
    if compiled and not G.compiled_available(torch.device("cpu"), torch.float32):
        pytest.skip("compiled decode loop unavailable")
    op = torch.ops.charrnn_fast.lstm_lm_generate if compiled else python_loop
    embed, weights, hw, hb = lm(L=1, H=16, V=12)
    B = 40_000
    tok = torch.full((B,), 2)
    h, c = torch.zeros(1, B, 16), torch.zeros(1, B, 16)
    ids = op(tok, h, c, embed, weights, hw, hb, 1, T, 0, 1.0, False, 2024, 0)[0][:, 0]
    # The logits of that state, computed independently in float64.
    x = torch.nn.functional.one_hot(torch.tensor([2]), 12).double()
    w_ih, w_hh, b_ih, b_hh = (w.double() for w in weights)
    i, f, g, o = (x @ w_ih.t() + b_ih + b_hh).chunk(4, dim=1)
    hid = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
    probs = torch.softmax((hid @ hw.double().t() + hb.double()) / T, dim=1)[0]
    counts = torch.bincount(ids, minlength=12).double()
    assert _chi_square_p(counts, probs) > 1e-3, (counts / B, probs)


@pytest.mark.parametrize("kw", [dict(top_k=3), dict(top_p=0.5), dict(top_k=5, top_p=0.8)], ids=str)
def test_pick_honours_top_k_and_top_p(kw):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 20, generator=g).repeat(5000, 1)
    ids = G.pick(logits, seed=1, **kw)
    probs = torch.softmax(logits[0].double(), 0)
    order = torch.argsort(probs, descending=True)
    allowed = order[: kw.get("top_k", 20)]
    if "top_p" in kw:
        p = probs[allowed] / probs[allowed].sum()
        before = torch.cumsum(p, 0) - p
        allowed = allowed[before < kw["top_p"]]
    assert set(ids.tolist()) == set(allowed.tolist())  # every allowed token drawn, none other


def test_argmax_and_tiny_temperature_pick_the_maximum():
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(0))
    best = logits.argmax(1)
    assert torch.equal(G.pick(logits, argmax=True), best)
    for T in (1e-45, 5e-324, 1e-300):  # (z - max) / T underflows: weight on the max only
        assert torch.equal(G.pick(logits, temperature=T, seed=3), best)


@needs_compiled
def test_compiled_tiny_temperature_is_argmax():
    greedy = call(torch.ops.charrnn_fast.lstm_lm_generate, argmax=True)[0]
    tiny = call(torch.ops.charrnn_fast.lstm_lm_generate, temperature=1e-45, seed=9)[0]
    assert torch.equal(greedy, tiny)


@needs_compiled
@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(temperature=float("nan")), "temperature must be > 0"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampler_arguments_are_named(kw, match):
    with pytest.raises(RuntimeError, match=match):
        call(torch.ops.charrnn_fast.lstm_lm_generate, **kw)
    with pytest.raises(ValueError, match=match):
        call(G.lstm_lm_generate, **kw)
    with pytest.raises(ValueError, match=match):
        G.SamplerOptions(**kw)


def test_sampler_options_or_their_settings_by_keyword():
    """lstm_lm_generate and pick take a SamplerOptions or its settings by
    keyword, with the same tokens; a setting by position, or both forms at
    once, is a TypeError that says so."""
    embed, weights, hw, hb = lm()
    args = (torch.tensor([1, 4]), torch.zeros(2, 2, 24), torch.zeros(2, 2, 24), embed, weights)
    args = (*args, hw, hb, 20)
    sampler = G.SamplerOptions(temperature=0.7, top_k=5, seed=9)
    ids = G.lstm_lm_generate(*args, sampler, 3)[0]
    assert torch.equal(
        ids, G.lstm_lm_generate(*args, temperature=0.7, top_k=5, seed=9, offset=3)[0]
    )
    assert not torch.equal(ids, G.lstm_lm_generate(*args, sampler, 4)[0])
    with pytest.raises(TypeError, match="sampler must be a SamplerOptions, got float"):
        G.lstm_lm_generate(*args, 0.7)
    with pytest.raises(TypeError, match="not both: got sampler and seed"):
        G.lstm_lm_generate(*args, sampler, seed=2)
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(G.pick(logits, sampler, pos=2), G.pick(logits, pos=2, **vars(sampler)))
    with pytest.raises(TypeError, match="unexpected keyword argument 'temp'"):
        G.pick(logits, temp=0.5)


@needs_compiled
def test_bad_tensors_are_named():
    embed, weights, hw, hb = lm()
    h = torch.zeros(2, 1, 24)
    op = torch.ops.charrnn_fast.lstm_lm_generate
    with pytest.raises(RuntimeError, match=r"tokens\[0\] = 30 is outside the vocabulary"):
        op(torch.tensor([30]), h, h, embed, weights, hw, hb, 5, 1.0, 0, 1.0, False, 0, 0)
    with pytest.raises(RuntimeError, match="weights must hold 4 tensors per layer"):
        op(torch.tensor([1]), h, h, embed, weights[:3], hw, hb, 5, 1.0, 0, 1.0, False, 0, 0)
    with pytest.raises(RuntimeError, match=r"w_hh must be \[G \* H, H\] with G = 4"):
        bad = [weights[0], weights[1][:, :5], *weights[2:]]
        op(torch.tensor([1]), h, h, embed, bad, hw, hb, 5, 1.0, 0, 1.0, False, 0, 0)
    with pytest.raises(RuntimeError, match="must be float32"):
        op(torch.tensor([1]), h.double(), h.double(), embed, weights, hw, hb, 5, 1.0, 0, 1.0,
           False, 0, 0)  # fmt: skip


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_uses_the_python_loop_with_the_same_tokens():
    embed, weights, hw, hb = lm()
    tok, h = torch.tensor([1, 4]), torch.zeros(2, 2, 24)
    cpu = G.lstm_lm_generate(tok, h, h, embed, weights, hw, hb, 25, argmax=True)
    dev = [w.cuda() for w in weights]
    gpu = G.lstm_lm_generate(tok.cuda(), h.cuda(), h.cuda(), None, dev, hw.cuda(), hb.cuda(), 25,
                             argmax=True)  # fmt: skip
    assert torch.equal(cpu[0], gpu[0].cpu())
    sampled = G.lstm_lm_generate(tok.cuda(), h.cuda(), h.cuda(), None, dev, hw.cuda(), hb.cuda(),
                                 25, seed=3)  # fmt: skip
    assert sampled[0].shape == (2, 25) and sampled[0].device.type == "cuda"


def test_python_loop_names_a_token_outside_the_vocabulary():
    embed, weights, hw, hb = lm()
    h = torch.zeros(2, 2, 24)
    with pytest.raises(ValueError, match=r"tokens\[1\] = 30 is outside the vocabulary \[0, 30\)"):
        python_loop(
            torch.tensor([3, 30]), h, h, embed, weights, hw, hb, 5, 1.0, 0, 1.0, False, 0, 0
        )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "kw", [dict(argmax=True), dict(seed=5, top_k=7, top_p=0.9, temperature=0.8)]
)
@pytest.mark.parametrize("E", [0, 16])
def test_cuda_graph_chunks_give_the_eager_loops_tokens_and_state(monkeypatch, kw, E):
    embed, weights, hw, hb = lm(E=E)
    dev = [w.cuda() for w in (*weights, hw, hb)]
    emb = embed.cuda() if embed is not None else None
    g = torch.Generator().manual_seed(2)
    tok = torch.randint(30, (3,), generator=g).cuda()
    h0, c0 = (torch.randn(2, 3, 24, generator=g).cuda() * 0.5 for _ in range(2))
    steps = 2 * G.GRAPH_CHUNK + 7  # graphed chunks, then an eager tail
    args = (tok, h0, c0, emb, dev[:-2], dev[-2], dev[-1], steps)
    graphed = G.lstm_lm_generate(*args, offset=11, **kw)
    monkeypatch.setattr(G, "GRAPH_CHUNK", 10**9)  # eager: one step per Python iteration
    eager = G.lstm_lm_generate(*args, offset=11, **kw)
    assert torch.equal(graphed[0], eager[0])
    torch.testing.assert_close(graphed[1], eager[1], rtol=0, atol=0)
    torch.testing.assert_close(graphed[2], eager[2], rtol=0, atol=0)
    assert torch.equal(h0, args[1])  # the caller's state is not modified


@pytest.mark.parametrize("E", [0, 16])
def test_graph_chunk_logic_on_the_cpu(E):
    # The chunk that CUDA captures, run eagerly: it must move tokens, state and
    # positions on exactly as the step-by-step loop does.
    embed, weights, hw, hb = lm(E=E)
    g = torch.Generator().manual_seed(2)
    tok = torch.randint(30, (3,), generator=g)
    h0, c0 = (torch.randn(2, 3, 24, generator=g) * 0.5 for _ in range(2))
    sampler, rows = G.SamplerOptions(0.9, 5, 0.95, False, 7), torch.arange(3)
    model = G._Model(embed, weights, hw, hb)
    ids, cur, h, c = G._generate_graphed(tok, h0, c0, model, 2, sampler, rows, 4, capture=False)
    want = G._generate_python(tok, h0, c0, model, 2 * G.GRAPH_CHUNK, sampler, 4)
    assert torch.equal(ids, want[0]) and torch.equal(cur, want[0][:, -1])
    assert torch.equal(torch.stack(h), want[1]) and torch.equal(torch.stack(c), want[2])


@needs_compiled
@pytest.mark.parametrize("E", [0, 16])
def test_packed_weights_are_reused_only_while_unchanged(E):
    # The compiled loop keeps the last packed model; an in-place update of any
    # weight (an optimizer step) or other tensors must not decode the old one.
    embed, weights, hw, hb = lm(E=E)
    op = torch.ops.charrnn_fast.lstm_lm_generate
    tok, h = torch.tensor([1, 2]), torch.zeros(2, 2, 24)

    def run(ws, head_b=hb):
        return op(tok, h, h, embed, ws, hw, head_b, 30, 1.0, 0, 1.0, True, 0, 0)

    first = run(weights)
    assert all(torch.equal(a, b) for a, b in zip(run(weights), first))  # reused: same result
    for i in (1, 2, 5):  # w_hh of layer 0, a bias, w_hh of layer 1: each in place
        before = run(weights)
        weights[i].mul_(-1.5)
        after, fresh = run(weights), run([w.clone() for w in weights])
        assert all(torch.equal(a, b) for a, b in zip(after, fresh))
        assert not torch.equal(after[1], before[1])
    hb.add_(3.0)  # the head's bias, in place
    assert torch.equal(run(weights)[0], run(weights, hb.clone())[0])


@needs_compiled
def test_cached_model_does_not_hide_a_wrong_embedding_width():
    embed, weights, hw, hb = lm(E=16)
    op = torch.ops.charrnn_fast.lstm_lm_generate
    tok, h = torch.tensor([1]), torch.zeros(2, 1, 24)
    op(tok, h, h, embed, weights, hw, hb, 3, 1.0, 0, 1.0, True, 0, 0)  # cached now
    with pytest.raises(RuntimeError, match="w_ih must have shape"):
        op(tok, h, h, embed[:, :8].contiguous(), weights, hw, hb, 3, 1.0, 0, 1.0, True, 0, 0)


@needs_compiled
def test_inference_tensors_decode_like_ordinary_ones():
    embed, weights, hw, hb = lm()
    op = torch.ops.charrnn_fast.lstm_lm_generate
    tok, h = torch.tensor([1, 2]), torch.zeros(2, 2, 24)
    want = op(tok, h, h, embed, weights, hw, hb, 20, 1.0, 0, 1.0, True, 0, 0)
    with torch.inference_mode():
        inf = [w.clone() for w in weights]
        got = op(tok, h, h, embed, inf, hw.clone(), hb.clone(), 20, 1.0, 0, 1.0, True, 0, 0)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@needs_compiled
def test_state_and_head_that_disagree_with_the_weights_are_named():
    """The model's sizes come from its weights; h0, c0 and the head are checked
    against them, and the error names the one that disagrees."""
    embed, weights, hw, hb = lm()  # L = 2, H = 24, V = 30, one-hot input
    op, tok, h = torch.ops.charrnn_fast.lstm_lm_generate, torch.tensor([1]), torch.zeros(2, 1, 24)

    def run(h0=h, c0=h, head_w=hw, head_b=hb):
        return op(tok, h0, c0, embed, weights, head_w, head_b, 5, 1.0, 0, 1.0, False, 0, 0)

    with pytest.raises(RuntimeError, match=r"h0 must have shape \[2, 1, 24\], got \[1, 1, 24\]"):
        run(h0=torch.zeros(1, 1, 24))
    with pytest.raises(RuntimeError, match=r"h0 must have shape \[2, 1, 24\], got \[2, 1, 25\]"):
        run(h0=torch.zeros(2, 1, 25))
    with pytest.raises(RuntimeError, match=r"c0 must have shape \[2, 1, 24\], got \[2, 1, 23\]"):
        run(c0=torch.zeros(2, 1, 23))
    with pytest.raises(RuntimeError, match=r"head_w must have shape \[30, 24\], got \[31, 24\]"):
        run(head_w=torch.randn(31, 24), head_b=torch.randn(31))
    with pytest.raises(ValueError, match=r"weights\[0\] is torch.float32 on cpu but h0 is "):
        G.lstm_lm_generate(tok, h.double(), h.double(), embed, weights, hw, hb, 5)
    with pytest.raises(ValueError, match=r"c0 is torch.float32 on cpu but h0 is torch.float64"):
        G.lstm_lm_generate(tok, h.double(), h, embed, [w.double() for w in weights], hw, hb, 5)


@needs_compiled
def test_nan_logits_are_never_picked_on_either_path():
    """A NaN logit counts as -inf in the compiled sampler and in the PyTorch loop
    alike (torch.argmax alone would take it for the maximum); a row of NaNs gives 0."""
    embed, weights, hw, hb = lm()
    nan_first = hw.clone()
    nan_first[0, 0] = float("nan")  # token 0's logit is NaN at every step
    tok, h = torch.tensor([1, 2, 3]), torch.full((2, 3, 24), 0.5)
    for head, expect_zero in ((nan_first, False), (torch.full_like(hw, float("nan")), True)):
        for argmax in (False, True):
            args = (tok, h, h, embed, weights, head, hb, 30)
            ours = G.lstm_lm_generate(*args, argmax=argmax, seed=3)[0]
            ref = python_loop(*args, 1.0, 0, 1.0, argmax, 3, 0)[0]
            assert torch.equal(ours, ref), (argmax, ours, ref)
            assert bool((ours == 0).all()) == expect_zero and (expect_zero or not (ours == 0).any())
    z = torch.tensor([[float("nan"), 1.0, 2.0], [float("nan")] * 3])
    assert G.pick(z, argmax=True).tolist() == [2, 0]
    assert G.pick(z, top_k=1, seed=1).tolist() == [2, 0]


def _compiled_pick(z: list[float], **kw) -> int:
    """The compiled sampler on logits z: a 1-unit LSTM with zero weights and a zero
    head, so the logits are head_b = z exactly."""
    V, op = len(z), torch.ops.charrnn_fast.lstm_lm_generate
    zeros = torch.zeros(1, 1, 1)
    o = dict(temperature=1.0, top_k=0, top_p=1.0, argmax=False, seed=0) | kw
    ids = op(torch.tensor([0]), zeros, zeros, None, [torch.zeros(4, V), torch.zeros(4, 1)],
             torch.zeros(V, 1), torch.tensor(z), 1, *o.values(), 0)[0]  # fmt: skip
    return int(ids[0, 0])


@needs_compiled
@pytest.mark.parametrize("kw", [dict(argmax=True), dict(), dict(top_k=2), dict(top_p=0.3),
                                dict(top_k=2, top_p=0.5), dict(temperature=1e-30)], ids=str)  # fmt: skip
def test_compiled_and_python_samplers_agree_on_nan_and_infinite_logits(kw):
    nan, inf = math.nan, math.inf
    rows = [[nan, -inf], [nan, nan, -inf, -inf], [-inf, nan], [nan, nan], [nan, 1.0, nan, 1.0],
            [inf, nan, inf], [nan, inf], [-inf, -inf], [2.0, nan, 1.0, 3.0, nan, 0.5]]  # fmt: skip
    for z in rows:
        for seed in range(4):
            ref = G.pick(torch.tensor([z]), **(dict(seed=seed) | kw))
            assert _compiled_pick(z, **(dict(seed=seed) | kw)) == int(ref[0]), (z, seed)


@needs_compiled
def test_embedding_views_are_read_in_their_logical_order():
    """A transposed or expanded embedding gives the tokens of its contiguous copy
    (the op once read its storage as if it were [V, E] in order)."""
    embed, weights, hw, hb = lm(E=8)
    tok, h = torch.tensor([1, 5, 29]), torch.zeros(2, 3, 24)
    args = (weights, hw, hb, 20, 1.0, 0, 1.0, True, 0, 0)
    op = torch.ops.charrnn_fast.lstm_lm_generate
    for view in (embed.t().contiguous().t(), torch.randn(1, 8).expand(30, 8)):
        assert torch.equal(
            op(tok, h, h, view, *args)[0], op(tok, h, h, view.contiguous(), *args)[0]
        )


@needs_compiled
def test_any_python_int_seed_is_its_value_mod_2_64():
    """Seeds past int64 (the op's type) are reduced mod 2^64 before the call, as the
    Python sampler's uniform() reduces them: no overflow error, the same streams."""
    for big in (2**63, 2**64 + 5, -(2**70) + 7):
        small = big % 2**64 - (2**64 if big % 2**64 >= 2**63 else 0)  # the int64 with those bits
        ours = call(G.lstm_lm_generate, seed=big)[0]
        assert torch.equal(ours, call(G.lstm_lm_generate, seed=small)[0])
        assert torch.equal(ours, call(python_loop, seed=big)[0])
    assert not torch.equal(call(G.lstm_lm_generate, seed=2**63)[0], call(G.lstm_lm_generate)[0])
