"""One layer and direction of the recurrence: plain, reversed, packed, projected.

`recur` takes the input projection of one layer (all steps) and runs the
recurrence through the chosen backend's op (autograd.LSTMRecurrence).

Packed sequences: rows are sorted by length, longest first, so the rows
still running at step t are the first batch_sizes[t], and runs of steps with
the same batch size are dense blocks of the packed data. Each such segment
is one call of the fused op on its rows; rows that end with a segment leave
their final state behind. The reverse direction walks the segments from the
last step back, and a row joins (from its initial state) at its own last step.

Projections (proj_size P > 0): h_t = W_hr (o_t * tanh(c_t)), so the next
step's GEMM reads P columns. Backends with a projected op (`proj_fwd`, the
cpu backend) run it; cuda and triton run their plain op with the projection
folded into the recurrent weight (`_folded`); the reference runs the step as
written. Legend: T steps, B batch, H hidden units, P
projection size (H without one), N packed rows (the sum of batch_sizes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn_fast.autograd import LSTMProjRecurrence, LSTMRecurrence
from charrnn_fast.backends import Backend, reference
from charrnn_fast.contract import acc_dtype


def recur(
    gx: Tensor,
    sizes: list[int] | None,
    w_hh: Tensor,
    w_hr: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    backend: Backend,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """gx [T,B,4H] (or packed [N,4H] with sizes, the batch size of each step),
    w_hh [4H,P], w_hr [P,H] or None, h0 [B,P], c0 [B,H] -> y [T,B,P] (or
    [N,P]), hT [B,P], cT [B,H]. `reverse`: the direction that reads time
    backwards (its output stays in input order)."""

    def step(g: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        g, h, c = g.contiguous(), h.contiguous(), c.contiguous()
        ws = (w_hh,) if w_hr is None else (w_hh, w_hr)
        save = torch.is_grad_enabled() and any(t.requires_grad for t in (g, *ws, h, c))
        if w_hr is None:
            return LSTMRecurrence.apply(g, w_hh.contiguous(), h, c, backend, save)
        if backend.proj_fwd is not None:
            args = (g, w_hh.contiguous(), w_hr.contiguous(), h, c, backend, save)
            return LSTMProjRecurrence.apply(*args)
        if backend.name == "reference":  # the oracle: the projected step as written
            return reference.projected(g, w_hh, w_hr, h, c)
        return _folded(g, w_hh, w_hr, h, c, backend, save)

    if sizes is None:
        if not reverse:
            return step(gx, h0, c0)
        y, hT, cT = step(gx.flip(0), h0, c0)
        return y.flip(0), hT, cT
    return (_packed_reverse if reverse else _packed_forward)(gx, sizes, h0, c0, step)


def _folded(g, w_hh, w_hr, h0, c0, backend, save):
    """The projected recurrence on a backend's plain op: with r_t = o_t * tanh(c_t),
    h_t = W_hr r_t, so the next step's pre-activation W_hh h_t is (W_hh W_hr) r_t.
    The op runs on r with recurrent weight W_hh W_hr [4H, H], r_{-1} = 0 and h0's
    term folded into step 0; y = r W_hr^T afterwards, one GEMM. Exact in real
    arithmetic; autograd differentiates the folding (and twice, as the op).
    The recurrent GEMM reads H columns instead of P: for backends without a
    projected kernel of their own (cuda, triton)."""
    acc = acc_dtype(g.dtype)
    w_eff = (w_hh.to(acc) @ w_hr.to(acc)).to(g.dtype).contiguous()
    g = torch.cat(((g[0] + h0 @ w_hh.t()).unsqueeze(0), g[1:])).contiguous()
    r0 = c0.new_zeros(c0.shape)
    r, _, cT = LSTMRecurrence.apply(g, w_eff, r0, c0, backend, save)
    y = r @ w_hr.t()
    return y, y[-1], cT


def _segments(sizes: list[int]) -> list[tuple[int, int, int, int]]:
    """(first step, end step, batch size, packed row offset) of each run of equal sizes."""
    segs, t0, off = [], 0, 0
    for t in range(1, len(sizes) + 1):
        if t == len(sizes) or sizes[t] != sizes[t0]:
            segs.append((t0, t, sizes[t0], off))
            off += (t - t0) * sizes[t0]
            t0 = t
    return segs


def _block(gx: Tensor, seg: tuple[int, int, int, int]) -> Tensor:
    t0, t1, b, off = seg
    return gx[off : off + (t1 - t0) * b].view(t1 - t0, b, gx.size(-1))


def _packed_forward(gx, sizes, h0, c0, step):
    segs = _segments(sizes)
    h, c = h0, c0
    ys, done_h, done_c = [], [], []
    for k, seg in enumerate(segs):
        b = seg[2]
        y, h, c = step(_block(gx, seg), h[:b], c[:b])
        ys.append(y.reshape(-1, y.size(-1)))
        nxt = segs[k + 1][2] if k + 1 < len(segs) else 0
        done_h.append(h[nxt:])  # rows whose sequences end with this segment
        done_c.append(c[nxt:])
    return torch.cat(ys), torch.cat(done_h[::-1]), torch.cat(done_c[::-1])


def _packed_reverse(gx, sizes, h0, c0, step):
    segs = _segments(sizes)
    ys: list[Tensor] = [gx] * len(segs)
    h, c = h0[:0], c0[:0]
    for k in range(len(segs) - 1, -1, -1):
        b = segs[k][2]
        if b > h.size(0):  # rows whose last step is in this segment start here
            h = torch.cat((h, h0[h.size(0) : b]))
            c = torch.cat((c, c0[c.size(0) : b]))
        y, h, c = step(_block(gx, segs[k]).flip(0), h, c)
        ys[k] = y.flip(0).reshape(-1, y.size(-1))
    return torch.cat(ys), h, c
