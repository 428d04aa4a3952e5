"""charrnn_fast.LSTM: a drop-in torch.nn.LSTM whose recurrence runs in fused kernels.

A subclass of nn.LSTM, so the constructor, its validation, parameter names,
shapes, order, init and state_dict are nn.LSTM's own. Only forward differs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from charrnn_fast import _compile, backends
from charrnn_fast.functional import run

_NO_JIT = (
    "charrnn_fast.LSTM cannot be {}: TorchScript does not see its fused kernels. "
    "Run it eagerly, or compile it with torch.compile (full graph, no break)."
)

# torch.compile needs torch._dynamo.config.allow_rnn for any nn.LSTM subclass;
# set when Dynamo loads, not here (importing it costs a second): see _compile.py.
_compile.install()


class LSTM(nn.LSTM):
    """nn.LSTM with one extra keyword, `backend` ("cuda", "triton", "cpu",
    "reference", or None to choose by device, dtype and shape).

    Every input nn.LSTM takes runs here: batched, unbatched and PackedSequence
    input, proj_size > 0, given or default (h_0, c_0). Arguments are checked by
    nn.LSTM's own checks, so errors read as nn.LSTM's.
    """

    def __init__(self, *args, backend: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if backend is not None:
            backends.get(backend)  # an unknown name fails here, not at the first call
        self.backend = backend

    def __prepare_scriptable__(self) -> LSTM:
        # torch.jit.script calls this on every submodule before compiling; left
        # alone, it would compile nn.LSTM's forward instead of ours, silently.
        raise RuntimeError(_NO_JIT.format("scripted (torch.jit.script)"))

    def forward(
        self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        if torch.jit.is_tracing():
            raise RuntimeError(_NO_JIT.format("traced (torch.jit.trace)"))
        # Read the parameters by name each call, so weights replaced or moved
        # after construction (load_state_dict, .to, weight norm) are seen.
        weights = [getattr(self, name) for name in self._flat_weights_names]
        args = dict(num_layers=self.num_layers, bias=self.bias, D=2 if self.bidirectional else 1,
                    dropout=self.dropout, training=self.training, backend=self.backend)  # fmt: skip
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
            out, h_n, c_n = run(data, batch_sizes, hx, weights, **args)
            packed = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden((h_n, c_n), unsorted_indices)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
        if hx is None:
            self.check_input(x, None)
        else:
            want = 3 if batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(
                    f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, hx and cx "
                    f"should also be {want}-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            if not batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            self.check_forward_args(x, hx, None)
        if self.batch_first:
            x = x.transpose(0, 1)
        out, h_n, c_n = run(x, None, hx, weights, **args)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend is None else f"{s}, backend={self.backend!r}"


def from_torch(module: nn.LSTM, backend: str | None = None) -> LSTM:
    """A charrnn_fast.LSTM with the same configuration and weights as `module`."""
    new = LSTM(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
        proj_size=module.proj_size,
        backend=backend,
    )
    p = next(module.parameters())
    new = new.to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        new.load_state_dict(module.state_dict())
    return new
