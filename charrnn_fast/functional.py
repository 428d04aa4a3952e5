"""charrnn_fast.lstm: the multi-layer, bidirectional LSTM over LSTMRecurrence.

Per layer and direction, the input projection for all steps is one GEMM done
by the chosen backend's `project` (a differentiable PyTorch call, so autograd
gives dx, dW_ih and the bias grads), and only the recurrence goes through the
fused op. Packed sequences (`batch_sizes`) run the recurrence in segments of
steps that share one batch size: rows are sorted by length, so the rows still
running at step t are the first batch_sizes[t]. Projections (`proj_size`)
run in the recurrence (`recurrence.py`). Whether ATen's fused LSTM or ours
serves a CPU call is measured (backends/dispatch.py). Legend: T steps, B
batch, I input size, H hidden units, P projection size (H without one).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn_fast import backends
from charrnn_fast.backends import dispatch
from charrnn_fast.recurrence import recur


def _check_inputs(
    x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor], shapes: tuple[tuple, tuple]
) -> None:
    w = weights[0]
    if x.size(-1) != w.size(1):
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {w.size(1)}, got {x.size(-1)}"
        )
    if x.device != w.device:
        raise RuntimeError(
            f"Input and parameter tensors are not at the same device, found input tensor "
            f"at {x.device} and parameter tensor at {w.device}"
        )
    for name, t in (("input", x), ("hx[0] (h_0)", hx[0]), ("hx[1] (c_0)", hx[1])):
        if t.device != x.device:
            raise RuntimeError(
                f"Input and hidden tensors are not at the same device, found input tensor "
                f"at {x.device} and hidden tensor at {t.device} ({name})"
            )
        if t.dtype != w.dtype:
            raise ValueError(
                f"RNN input dtype ({t.dtype}) does not match weight dtype ({w.dtype}). "
                f"Convert input: input.to({w.dtype}), or convert model: model.to({t.dtype}) "
                f"({name})"
            )
    for i, (t, shape) in enumerate(zip(hx, shapes)):
        if tuple(t.shape) != shape:
            raise RuntimeError(f"Expected hidden[{i}] size {shape}, got {list(t.shape)}")


def _autocast_enabled(dev: str) -> bool:
    """Whether autocast is on for device type `dev` ("cpu", "cuda", ...)."""
    # Dynamo in torch 2.11 cannot trace torch.amp.is_autocast_available
    # (fullgraph=True fails); the devices it compiles for all have autocast, so
    # while compiling ask is_autocast_enabled alone.
    if torch.compiler.is_compiling():
        return torch.is_autocast_enabled(dev)
    return torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)


def lstm(
    input: Tensor,
    hx: tuple[Tensor, Tensor] | None,
    weights: list[Tensor],
    *,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    backend: str | None = None,
    proj_size: int = 0,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Functional LSTM with nn.LSTM semantics.

    input: [T, B, I] ([B, T, I] if batch_first; [T, I] unbatched).
    hx: (h_0 [L*D, B, P], c_0 [L*D, B, H]) ([L*D, P] / [L*D, H] unbatched), or
        None for zeros (L = num_layers, D = 2 if bidirectional else 1).
    weights: nn.LSTM's flat list, per layer and direction: w_ih [4H, I_l],
        w_hh [4H, P], then b_ih [4H], b_hh [4H] when bias, then w_hr [P, H]
        when proj_size > 0.
    Returns output [T, B, D*P] (batch_first / unbatched as the input) and
    (h_n, c_n), shaped like hx.
    """
    if input.dim() not in (2, 3):
        raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if batch_first else 1)
    if batch_first:
        x = x.transpose(0, 1)
    D = 2 if bidirectional else 1
    per = (4 if bias else 2) + (proj_size > 0)
    if len(weights) != num_layers * D * per:
        raise ValueError(
            f"weights must hold {num_layers * D * per} tensors for num_layers={num_layers}, "
            f"bidirectional={bidirectional}, bias={bias}, proj_size={proj_size}; "
            f"got {len(weights)}"
        )
    if hx is not None:
        want = 3 if batched else 2
        if hx[0].dim() != want or hx[1].dim() != want:
            raise RuntimeError(
                f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, hx and cx should "
                f"also be {want}-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )
        if not batched:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    out, h_n, c_n = run(x, None, hx, weights, num_layers=num_layers, bias=bias, D=D,
                        dropout=dropout, training=training, backend=backend)  # fmt: skip
    if batch_first:
        out = out.transpose(0, 1)
    if not batched:
        out = out.squeeze(0 if batch_first else 1)
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return out, (h_n, c_n)


def run(
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: tuple[Tensor, Tensor] | None,
    weights: list[Tensor],
    *,
    num_layers: int,
    bias: bool,
    D: int,
    dropout: float,
    training: bool,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The whole stack on time-major x[T,B,I], or on packed data x[N,I] with
    batch_sizes[T] (int64, CPU, non-increasing). hx: (h0 [L*D,B,P], c0
    [L*D,B,H]) or None. Returns out ([T,B,D*P] or [N,D*P]), h_n, c_n."""
    per = len(weights) // (num_layers * D)
    H = weights[1].size(0) // 4
    P = weights[per - 1].size(0) if per in (3, 5) else H
    if batch_sizes is not None:
        T, B = len(batch_sizes), int(batch_sizes[0]) if len(batch_sizes) else 0
    else:
        T, B = x.shape[:2]
    if hx is None:
        hx = (x.new_zeros((num_layers * D, B, P)), x.new_zeros((num_layers * D, B, H)))
    # Under autocast nn.LSTM runs in the autocast dtype, whatever the dtypes of
    # input, weights and state; so do we, casting once here so the recurrence
    # sees one dtype throughout.
    dev = x.device.type
    autocast = _autocast_enabled(dev)
    if autocast and x.is_floating_point():
        dt = torch.get_autocast_dtype(dev)
        x, weights = x.to(dt), [w.to(dt) for w in weights]
        hx = (hx[0].to(dt), hx[1].to(dt))
    _check_inputs(x, hx, weights, ((num_layers * D, B, P), (num_layers * D, B, H)))
    if T == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def aten(x, hx, weights, p=float(dropout) if training else 0.0):
        # Eval mode with gradients: train=True so that ATen saves for backward.
        train = training or torch.is_grad_enabled()
        if batch_sizes is None:
            return torch._VF.lstm(x, hx, weights, bias, num_layers, p, train, D == 2, False)
        return torch._VF.lstm(x, batch_sizes, hx, weights, bias, num_layers, p, train, D == 2)

    def ours(x, hx, weights, p=dropout):
        return _layers(x, batch_sizes, hx, weights, num_layers, bias, D, p, training, backend)

    # The casts are done: autocast must not re-cast the input GEMMs inside.
    with torch.autocast(dev, enabled=False) if autocast else contextlib.nullcontext():
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(t.requires_grad for t in (*hx, *weights))
        )
        shape = (T, B, x.size(-1), H, P if per in (3, 5) else 0, num_layers, D)
        if _aten_serves(x, hx, weights, batch_sizes, backend, needs_grad, shape, aten, ours):
            return aten(x, hx, weights)
        return ours(x, hx, weights)


def _aten_serves(x, hx, weights, batch_sizes, backend, needs_grad, shape, aten, ours) -> bool:
    """Whether ATen's fused LSTM serves this call (backends/dispatch.py): never
    under torch.compile or when a backend other than `cpu` was named; on the
    CPU by CHARRNN_FAST_DISPATCH, measured on inputs of this call's shape the
    first time such a call comes; on a GPU for projections (our GPU kernels
    have none)."""
    if torch.compiler.is_compiling():
        return False
    named = backends.requested(backend)
    T, B, I, H, P, L, D = shape
    if x.device.type != "cpu":
        return P > 0 and named is None
    if (named or "cpu") != "cpu":
        return False
    m = dispatch.mode()
    if m != "auto":
        return m == "aten"
    key = dispatch.Key.of(T, B, I, H, P, L, D, x.dtype, needs_grad, batch_sizes is not None)
    probes = lambda: _probes(x, hx, weights, needs_grad, aten, ours)  # noqa: E731
    return dispatch.decide(key, probes).choice == "aten"


def _probes(x, hx, weights, needs_grad, aten, ours):
    """Two calls that run each side once on fresh inputs of this call's shapes
    (the caller's values untouched, no dropout, no RNG of the caller's)."""
    g = torch.Generator().manual_seed(0)
    xs = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.dtype).requires_grad_(x.requires_grad)
    hs = tuple(torch.zeros_like(h) for h in hx)
    ws = [w.detach().requires_grad_(needs_grad) for w in weights]
    wrt = ([xs] if x.requires_grad else []) + (ws if needs_grad else [])

    def probe(side):
        def call():
            with torch.set_grad_enabled(needs_grad):
                out, h, c = side(xs, hs, ws, 0.0)
                if needs_grad and wrt:
                    torch.autograd.grad(out.sum() + h.sum() + c.sum(), wrt)

        return call

    return probe(aten), probe(ours)


def _layers(
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: tuple[Tensor, Tensor],
    weights: list[Tensor],
    num_layers: int,
    bias: bool,
    D: int,
    dropout: float,
    training: bool,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Our kernels, layer by layer: x[T,B,I] (or packed [N,I]) -> out, h_n, c_n."""
    per = len(weights) // (num_layers * D)
    sizes = None if batch_sizes is None else [int(b) for b in batch_sizes]
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            idx = layer * D + d
            w = weights[idx * per : (idx + 1) * per]
            w_ih, w_hh = w[0], w[1]
            b = w[2] + w[3] if bias else None
            w_hr = w[-1] if per in (3, 5) else None
            # Select first: each backend projects its own input (the cpu
            # backend through oneDNN, the others through F.linear).
            # Packed data [N, I] is asked about as one step of N rows.
            probe = layer_input if sizes is None else layer_input.unsqueeze(0)
            chosen = backends.select(probe, w_hh, backend)
            gx = chosen.project(layer_input, w_ih, b)  # [T, B, 4H] or [N, 4H]
            y, hT, cT = recur(gx, sizes, w_hh, w_hr, hx[0][idx], hx[1][idx], chosen, d == 1)
            outs.append(y)
            h_n.append(hT)
            c_n.append(cT)
        layer_input = outs[0] if D == 1 else torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, p=dropout, training=True)
    return layer_input, torch.stack(h_n), torch.stack(c_n)
