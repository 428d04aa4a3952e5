"""Decoding a language model: token ids in, sampled token ids out.

`lstm_lm_generate` runs the loop token -> embedding (or one-hot) -> LSTM layers
-> linear head -> sampler -> next token for `steps` tokens; `rnn_lm_generate`
the same for GRU and vanilla-RNN layers. On the CPU in float32 each is one
call into compiled code (torch.ops.charrnn_fast.lstm_lm_generate,
csrc/cpu/generate.cpp; rnn_lm_generate, csrc/cpu/generate_rnn.cpp). On CUDA the loop is PyTorch ops,
captured as a CUDA graph of GRAPH_CHUNK steps and replayed (one launch per
chunk instead of ~10 per layer and step). Elsewhere (other dtypes, a CPU
without AVX2) the same PyTorch loop runs one step at a time. All use the same
sampler, so they give the same tokens for the same seed up to rounding of the
logits. The sampler's rule is written out in csrc/cpu/sampler.h; its settings
travel as one SamplerOptions, unpacked only at the op call.
Legend: L layers, B rows (independent streams), H hidden units, V vocabulary,
E embedding size.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn_fast import _ops


def _u64(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_C1, _C2, _C3 = _u64(0x9E3779B97F4A7C15), _u64(0xBF58476D1CE4E5B9), _u64(0x94D049BB133111EB)


def _srl(z: Tensor, n: int) -> Tensor:
    """Logical right shift of int64 bits (>> is arithmetic on int64)."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def _mix(z: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping, as uint64)."""
    z = z + _C1
    z = (z ^ _srl(z, 30)) * _C2
    z = (z ^ _srl(z, 27)) * _C3
    return z ^ _srl(z, 31)


def _seed_bits(seed: int) -> int:
    """Any Python int seed as the int64 with the bits of seed mod 2^64: what the
    compiled ops take, and what uniform's streams start from."""
    return _u64(seed % (1 << 64))


def uniform(seed: int, rows: Tensor, pos: int | Tensor) -> Tensor:
    """The sampler's u in [0, 1) for rows[B] (int64) at output position `pos`: float64 [B]."""
    s = _mix(torch.full_like(rows, _seed_bits(seed)))
    return _srl(_mix(_mix(s ^ rows) ^ pos), 11).double() * 2.0**-53


@dataclass(frozen=True)
class SamplerOptions:
    """How each next token is drawn from the logits (the rule of csrc/cpu/sampler.h):
    softmax(logits / temperature) restricted to the top_k most likely tokens
    (0 = all) and to the top_p nucleus (1 = all), or the argmax; row b's draw at
    output position p uses uniform(seed, b, p). Checked when made: a ValueError
    naming the field, as the compiled op words it. Any Python int seed works
    (taken mod 2^64)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    argmax: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        t = self.temperature
        if not self.argmax and not (t > 0 and math.isfinite(t)):
            raise ValueError(f"temperature must be > 0 and finite (got {t}); use argmax for greedy")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = all), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = all), got {self.top_p}")

    def op_args(self) -> tuple[float, int, float, bool, int]:
        """The decode ops' sampler arguments in their schema's order, the seed as
        the int64 they take."""
        return self.temperature, self.top_k, self.top_p, self.argmax, _seed_bits(self.seed)


def sampler_of(sampler: SamplerOptions | None, settings: dict[str, Any]) -> SamplerOptions:
    """`sampler`, or the SamplerOptions of settings given by keyword (temperature=,
    top_k=, top_p=, argmax=, seed=: what the functions here also accept); not both."""
    if sampler is None:
        return SamplerOptions(**settings)
    if not isinstance(sampler, SamplerOptions):
        raise TypeError(
            f"sampler must be a SamplerOptions, got {type(sampler).__name__} {sampler!r} "
            "(the settings alone go by keyword: temperature=..., seed=...)"
        )
    if settings:
        raise TypeError(
            f"the sampler's settings go in sampler or by keyword, not both: got sampler and "
            f"{', '.join(settings)}"
        )
    return sampler


def pick(
    logits: Tensor,
    sampler: SamplerOptions | None = None,
    rows: Tensor | None = None,
    pos: int | Tensor = 0,
    **settings: Any,
) -> Tensor:
    """Next token ids [B] (int64) from logits [B, V] by the rule of csrc/cpu/sampler.h.

    sampler: the SamplerOptions (or its settings by keyword, see `sampler_of`);
    rows: each row's stream number (default 0..B-1); pos: the output position.
    Any temperature > 0 is safe: weights are exp((z - max z) / T) in float64.
    """
    o = sampler_of(sampler, settings)
    temperature, top_k, top_p = o.temperature, o.top_k, o.top_p
    B, V = logits.shape
    # NaN logits are never picked (as -inf): a row of them gives token 0, as does the
    # compiled sampler (torch.argmax would take a NaN for the maximum). Infinities stay
    # (nan_to_num's default would clamp them to the largest finite double).
    z = logits.double().nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    best = z.argmax(dim=1)  # the first maximum
    if o.argmax:
        return best
    w = torch.exp((z - z.max(dim=1, keepdim=True).values) / temperature)
    if 0 < top_k < V:
        kth = torch.topk(z, top_k, dim=1).values[:, -1:]
        w = torch.where(z >= kth, w, torch.zeros_like(w))
    total = w.sum(dim=1, keepdim=True)
    if top_p < 1:
        sw, order = torch.sort(w, dim=1, descending=True, stable=True)
        before = torch.cumsum(sw, dim=1) - sw  # cumulative weight before each token
        keep = before < top_p * total
        w = torch.zeros_like(w).scatter(1, order, torch.where(keep, sw, torch.zeros_like(sw)))
        total = w.sum(dim=1, keepdim=True)
    if rows is None:
        rows = torch.arange(B, device=logits.device)
    target = uniform(o.seed, rows.to(logits.device), pos).unsqueeze(1) * total
    cum = torch.cumsum(w, dim=1)
    hit = (cum > target) & (w > 0)
    # The first hit; rounding can leave none (target in the last ulp): the last kept token.
    last = V - 1 - (w > 0).flip(1).int().argmax(dim=1)
    first = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), last)
    ok = torch.isfinite(total.squeeze(1)) & (total.squeeze(1) > 0)
    return torch.where(ok, first, best)


def compiled_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the compiled decode loop serves tensors of this device and dtype."""
    return (
        _ops.load_error() is None
        and device.type == "cpu"
        and dtype == torch.float32
        and _ops.cpu_vector_width() > 0
    )


@torch.no_grad()
def lstm_lm_generate(
    tokens: Tensor,
    h0: Tensor,
    c0: Tensor,
    embed: Tensor | None,
    weights: list[Tensor],
    head_w: Tensor,
    head_b: Tensor | None,
    steps: int,
    sampler: SamplerOptions | None = None,
    offset: int = 0,
    **settings: Any,
) -> tuple[Tensor, Tensor, Tensor]:
    """Feed tokens[B], sample the next token, feed it, ... `steps` times.

    tokens: int64 [B], the last token of each row not yet fed to the model.
    h0, c0: [L, B, H] state before feeding them.
    embed: [V, E] embedding, or None for one-hot input (layer 0's input size V).
    weights: nn.LSTM's flat list (unidirectional, no projection): per layer
        w_ih [4H, I], w_hh [4H, H] and, with biases, b_ih [4H], b_hh [4H].
    head_w [V, H], head_b [V] or None: logits = h_top head_w^T + head_b.
    sampler: the SamplerOptions, or its settings by keyword (temperature=0.8, ...).
    offset: row b's sample at output position offset + s uses the random
        number uniform(sampler.seed, b, offset + s), so splitting a generation
        into calls (offset = tokens generated so far) changes nothing.
    Returns ids [B, steps] int64 and the state (h, c) [L, B, H]: every token
    fed but the last sampled one, which is the `tokens` of the next call.
    """
    sampler = sampler_of(sampler, settings)
    _check_like(h0, c0=c0, embed=embed, weights=weights, head_w=head_w, head_b=head_b)
    model = _Model(embed, weights, head_w, head_b)
    if compiled_available(h0.device, h0.dtype):
        op = torch.ops.charrnn_fast.lstm_lm_generate
        return op(tokens, h0, c0, *model, steps, *sampler.op_args(), offset)
    return _generate_python(tokens, h0, c0, model, steps, sampler, offset)


# The non-LSTM cells, by nn.RNNBase's mode names (lower-cased).
RNN_MODES = ("gru", "rnn_relu", "rnn_tanh")


@torch.no_grad()
def rnn_lm_generate(
    mode: str,
    tokens: Tensor,
    h0: Tensor,
    embed: Tensor | None,
    weights: list[Tensor],
    head_w: Tensor,
    head_b: Tensor | None,
    steps: int,
    sampler: SamplerOptions | None = None,
    offset: int = 0,
    **settings: Any,
) -> tuple[Tensor, Tensor]:
    """lstm_lm_generate for a GRU (mode "gru") or vanilla RNN ("rnn_tanh",
    "rnn_relu") language model, with the same sampler and random streams.

    weights: nn.GRU's / nn.RNN's flat list: per layer w_ih [G*H, I], w_hh
        [G*H, H] and, with biases, b_ih [G*H], b_hh [G*H] (G = 3 for a GRU, gates
        r, z, n; 1 for an RNN). h0: [L, B, H]. Other arguments as lstm_lm_generate.
    Returns ids [B, steps] int64 and h [L, B, H].
    """
    if mode not in RNN_MODES:
        raise ValueError(f"mode must be one of {sorted(RNN_MODES)}, got {mode!r}")
    sampler = sampler_of(sampler, settings)
    _check_like(h0, embed=embed, weights=weights, head_w=head_w, head_b=head_b)
    model = _Model(embed, weights, head_w, head_b)
    if compiled_available(h0.device, h0.dtype):
        op = torch.ops.charrnn_fast.rnn_lm_generate
        return op(mode, tokens, h0, *model, steps, *sampler.op_args(), offset)
    ids, h, _ = _generate_python(tokens, h0, None, model, steps, sampler, offset, mode)
    return ids, h


class _Model(NamedTuple):
    """A language model's tensors as the decode loops take them (shapes in
    lstm_lm_generate), in the ops' order."""

    embed: Tensor | None
    weights: list[Tensor]
    head_w: Tensor
    head_b: Tensor | None


def _check_like(h0: Tensor, **named: Tensor | list[Tensor] | None) -> None:
    """ValueError naming the first tensor whose dtype or device is not h0's: the
    model and its state in one dtype, on one device (no silent casts or copies)."""
    for name, value in named.items():
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, t in items:
            if t is not None and (t.dtype != h0.dtype or t.device != h0.device):
                where = name if i is None else f"{name}[{i}]"
                raise ValueError(
                    f"{where} is {t.dtype} on {t.device} but h0 is {h0.dtype} on {h0.device}: "
                    "the model and its state must share one dtype and device"
                )


def _check_tokens(tokens: Tensor, vocab: int) -> None:
    """ValueError naming the first token outside [0, vocab) (one host sync, once per call)."""
    bad = ((tokens < 0) | (tokens >= vocab)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"tokens[{i}] = {int(tokens[i])} is outside the vocabulary [0, {vocab})")


def _step(cur, h, c, model: _Model, sampler: SamplerOptions, rows, pos, mode="lstm"):
    """One token per row: feed cur[B] (int64), update the lists h, c of [B, H]
    per layer in place (c empty but for an LSTM), return the next tokens [B].
    pos: int or int64 0-d tensor."""
    embed, weights, head_w, head_b = model
    L = len(h)
    per = len(weights) // L
    if embed is not None:
        x = embed[cur]
    else:  # one-hot by scatter: F.one_hot checks its values on the host (a sync)
        x = h[0].new_zeros((cur.shape[0], head_w.shape[0])).scatter_(1, cur.unsqueeze(1), 1.0)
    for layer in range(L):
        w_ih, w_hh = weights[layer * per], weights[layer * per + 1]
        b_ih, b_hh = weights[layer * per + 2 : layer * per + 4] if per == 4 else (None, None)
        if mode == "lstm":
            pre = F.linear(x, w_ih) + F.linear(h[layer], w_hh)
            if per == 4:
                pre = pre + b_ih + b_hh
            i, f, g, o = pre.float().chunk(4, dim=1)
            cell = torch.sigmoid(f) * c[layer].float() + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
            c[layer] = cell.to(c[layer].dtype)
        elif mode == "gru":
            xr, xz, xn = F.linear(x, w_ih, b_ih).float().chunk(3, dim=1)
            hr, hz, hn = F.linear(h[layer], w_hh, b_hh).float().chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            hid = (1 - z) * torch.tanh(xn + r * hn) + z * h[layer].float()
        else:
            pre = F.linear(x, w_ih, b_ih) + F.linear(h[layer], w_hh, b_hh)
            hid = torch.tanh(pre) if mode == "rnn_tanh" else torch.relu(pre)
        h[layer] = hid.to(h[layer].dtype)
        x = h[layer]
    return pick(F.linear(x, head_w, head_b), sampler, rows=rows, pos=pos)


def _generate_python(
    tokens, h0, c0, model: _Model, steps: int, sampler: SamplerOptions, offset: int, mode="lstm"
):
    """The same loop in PyTorch, one step at a time (any device and dtype); on
    CUDA, whole chunks of steps replay as CUDA graphs (_generate_graphed).
    c0 is None but for an LSTM, and so is the c returned."""
    tokens = tokens.to(h0.device)
    if not (h0.is_cuda and torch.cuda.is_current_stream_capturing()):  # the check syncs
        vocab = model.embed.shape[0] if model.embed is not None else model.head_w.shape[0]
        _check_tokens(tokens, vocab)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    h, c = list(h0.unbind(0)), [] if c0 is None else list(c0.unbind(0))
    cur, out, done = tokens, [], 0
    if h0.is_cuda and steps >= 2 * GRAPH_CHUNK and not torch.cuda.is_current_stream_capturing():
        chunks = steps // GRAPH_CHUNK
        ids, cur, h, c = _generate_graphed(
            tokens, h0, c0, model, chunks, sampler, rows, offset, mode=mode
        )
        out, done = [ids], ids.shape[1]
    for s in range(done, steps):
        cur = _step(cur, h, c, model, sampler, rows, offset + s, mode)
        out.append(cur.unsqueeze(1))
    ids = torch.cat(out, dim=1) if out else tokens.new_empty((tokens.shape[0], 0))
    return ids, torch.stack(h), torch.stack(c) if c else None


# Steps per CUDA graph: ~10 kernels per layer and step plus the sampler's ~30,
# so one replay stands for thousands of launches that Python would issue one by one.
GRAPH_CHUNK = 32


def _generate_graphed(
    tokens,
    h0,
    c0,
    model: _Model,
    chunks,
    sampler: SamplerOptions,
    rows,
    offset,
    capture=True,
    mode="lstm",
):
    """`chunks` x GRAPH_CHUNK steps of _step on CUDA: the chunk is captured once
    as a CUDA graph (which also moves the state buffers on), then replayed.
    Same kernels, same order as the eager loop, so the same tokens.
    capture=False runs the chunk eagerly instead (any device: tests its logic).
    Returns ids [B, chunks * GRAPH_CHUNK], the last sampled tokens [B], h and c (lists)."""
    cur = tokens.clone()
    h = [t.clone() for t in h0.unbind(0)]
    c = [] if c0 is None else [t.clone() for t in c0.unbind(0)]
    pos = torch.tensor(offset, device=h0.device, dtype=torch.int64)
    ids = tokens.new_empty((tokens.shape[0], GRAPH_CHUNK))

    def chunk() -> None:
        hh, cc, nxt = list(h), list(c), cur
        for s in range(GRAPH_CHUNK):
            nxt = _step(nxt, hh, cc, model, sampler, rows, pos + s, mode)
            ids[:, s] = nxt
        # The graph moves its own inputs on, so replays follow one another.
        cur.copy_(nxt)
        for dst, src in zip(h + c, hh + cc):
            dst.copy_(src)
        pos.add_(GRAPH_CHUNK)

    # On CUDA, all on the model's device: streams made elsewhere would capture
    # nothing (an empty graph, replayed silently); one capture stream per call,
    # and thread-local capture, so other threads' CUDA work does not break it.
    with torch.cuda.device(h0.device) if capture else contextlib.nullcontext():
        run = chunk
        if capture:
            saved = [t.clone() for t in (cur, pos, *h, *c)]
            side = torch.cuda.Stream(h0.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                chunk()  # warm-up outside capture (library handles, allocator)
            torch.cuda.current_stream().wait_stream(side)
            for dst, src in zip((cur, pos, *h, *c), saved):
                dst.copy_(src)
            graph = torch.cuda.CUDAGraph()
            capture_stream = torch.cuda.Stream(h0.device)
            with torch.cuda.graph(graph, stream=capture_stream, capture_error_mode="thread_local"):
                chunk()
            run = graph.replay
        out = []
        for _ in range(chunks):
            run()
            out.append(ids.clone())
    return torch.cat(out, dim=1), cur, h, c
