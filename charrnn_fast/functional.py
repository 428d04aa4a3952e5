"""charrnn_fast.lstm: the multi-layer, bidirectional LSTM over LSTMRecurrence.

Per layer and direction, the input projection for all steps is one GEMM done
by the chosen backend's `project` (a differentiable PyTorch call, so autograd
gives dx, dW_ih and the bias grads), and only the recurrence goes through the
fused op. Inputs are validated here, with errors
that name the argument, so the kernels only ever see well-formed tensors.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn_fast import backends
from charrnn_fast.autograd import LSTMRecurrence
from charrnn_fast.backends.cpu import aten_serves


def _check_inputs(
    x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor], shape: tuple[int, int, int]
) -> None:
    w = weights[0]
    if x.size(-1) != w.size(1):
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {w.size(1)}, got {x.size(-1)}"
        )
    for name, t in (("input", x), ("hx[0] (h_0)", hx[0]), ("hx[1] (c_0)", hx[1])):
        if t.device != w.device:
            raise RuntimeError(
                f"{name} is on {t.device} but the LSTM weights are on {w.device}; "
                "move both to the same device"
            )
        if t.dtype != w.dtype:
            raise ValueError(
                f"{name} dtype ({t.dtype}) does not match weight dtype ({w.dtype}): "
                f"convert it with .to({w.dtype}) or the model with .to({t.dtype})"
            )
    for name, t in (("hx[0] (h_0)", hx[0]), ("hx[1] (c_0)", hx[1])):
        if tuple(t.shape) != shape:
            raise RuntimeError(f"Expected {name} of size {shape}, got {tuple(t.shape)}")


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
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Functional LSTM with nn.LSTM semantics.

    input: [T, B, I] ([B, T, I] if batch_first; [T, I] unbatched).
    hx: (h_0, c_0), each [L*D, B, H] ([L*D, H] unbatched), or None for zeros
        (L = num_layers, D = 2 if bidirectional else 1).
    weights: nn.LSTM's flat list, per layer and direction: w_ih [4H, I_l],
        w_hh [4H, H], then b_ih [4H], b_hh [4H] when bias.
    Returns output [T, B, D*H] (batch_first / unbatched as the input) and
    (h_n, c_n), each shaped like hx.
    """
    if input.dim() not in (2, 3):
        raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if batch_first else 1)
    if batch_first:
        x = x.transpose(0, 1)
    T, B = x.shape[:2]
    D = 2 if bidirectional else 1
    stride = 4 if bias else 2
    if len(weights) != num_layers * D * stride:
        raise ValueError(
            f"weights must hold {num_layers * D * stride} tensors for num_layers={num_layers}, "
            f"bidirectional={bidirectional}, bias={bias}; got {len(weights)}"
        )
    H = weights[1].size(1)
    if hx is None:
        zeros = x.new_zeros((num_layers * D, B, H))
        hx = (zeros, zeros)
    else:
        want = 3 if batched else 2
        if hx[0].dim() != want or hx[1].dim() != want:
            raise RuntimeError(
                f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, hx and cx should "
                f"also be {want}-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )
        if not batched:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    # Under autocast nn.LSTM runs in the autocast dtype, whatever the dtypes of
    # input, weights and state; so do we, casting once here so the recurrence
    # sees one dtype throughout.
    dev = x.device.type
    autocast = _autocast_enabled(dev)
    if autocast and x.is_floating_point():
        dt = torch.get_autocast_dtype(dev)
        x, weights = x.to(dt), [w.to(dt) for w in weights]
        hx = (hx[0].to(dt), hx[1].to(dt))
    _check_inputs(x, hx, weights, (num_layers * D, B, H))
    if T == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    # The casts are done: autocast must not re-cast the input GEMMs inside.
    with torch.autocast(dev, enabled=False) if autocast else contextlib.nullcontext():
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(t.requires_grad for t in (*hx, *weights))
        )
        if aten_serves(x, hx, weights, backend, needs_grad):
            # Where ATen's fused LSTM is faster (backends/cpu.py). Eval mode with
            # gradients: train=True so that it saves for backward, without dropout.
            out, h_n, c_n = torch._VF.lstm(
                x, hx, weights, bias, num_layers, float(dropout) if training else 0.0,
                training or needs_grad, D == 2, False,
            )  # fmt: skip
        else:
            out, h_n, c_n = _layers(x, hx, weights, num_layers, bias, D, dropout, training, backend)
    if batch_first:
        out = out.transpose(0, 1)
    if not batched:
        out = out.squeeze(0 if batch_first else 1)
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return out, (h_n, c_n)


def _layers(
    x: Tensor,
    hx: tuple[Tensor, Tensor],
    weights: list[Tensor],
    num_layers: int,
    bias: bool,
    D: int,
    dropout: float,
    training: bool,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """x[T,B,I] time-major -> out[T,B,D*H], h_n[L*D,B,H], c_n[L*D,B,H]."""
    stride = 4 if bias else 2
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            idx = layer * D + d
            w_ih, w_hh = weights[idx * stride], weights[idx * stride + 1]
            b = weights[idx * stride + 2] + weights[idx * stride + 3] if bias else None
            # Select first: each backend projects its own input (the cpu
            # backend through oneDNN, the others through F.linear).
            chosen = backends.select(layer_input, w_hh, backend)
            gx = chosen.project(layer_input, w_ih, b)  # [T, B, 4H]
            if d == 1:  # the reverse direction reads time backwards
                gx = gx.flip(0)
            gx = gx.contiguous()
            h0, c0 = hx[0][idx].contiguous(), hx[1][idx].contiguous()
            save = torch.is_grad_enabled() and any(t.requires_grad for t in (gx, w_hh, h0, c0))
            y, hT, cT = LSTMRecurrence.apply(gx, w_hh.contiguous(), h0, c0, chosen, save)
            outs.append(y.flip(0) if d == 1 else y)
            h_n.append(hT)
            c_n.append(cT)
        layer_input = outs[0] if D == 1 else torch.cat(outs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, p=dropout, training=True)
    return layer_input, torch.stack(h_n), torch.stack(c_n)
